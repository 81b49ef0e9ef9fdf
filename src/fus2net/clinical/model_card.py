"""A model card (Mitchell et al., FAT* 2019) in Markdown, generated from one cell run.

It states what a reader of the numbers must know: which data, how it was split, the metrics
with their uncertainty, whether the probability can be taken at face value, where the model
looks, how it does elsewhere, and that it is a research model, not a medical device.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fus2net.cell.context import JobContext
from fus2net.cell.scoring import CellScores
from fus2net.cell.summary import CellSummary
from fus2net.clinical.recalibration import CalibrationResult
from fus2net.evaluation.metrics import METRICS
from fus2net.evaluation.stats import bootstrap_intervals
from fus2net.inference.loading import LoadedModel
from fus2net.inference.spec import ModelSpec
from fus2net.tracking.predictions import patient_groups

LIMITATIONS = (
    "Research software. Not a medical device: not cleared or approved by any regulator (FDA, "
    "CE/MDR), and not for diagnosis, triage or any clinical decision.",
    "Trained on one dataset (see Data). Public breast-ultrasound sets such as BUSI come from "
    "one hospital and scanner family, with burned-in annotations (text, calipers) that a model "
    "can learn instead of the lesion: see the localisation score.",
    "Performance on other populations, scanners, and operators is unknown unless listed under "
    "external validation; expect it to be lower.",
    "Probabilities are calibrated on validation images of the same dataset only; the "
    "operating points were chosen there too and can move on other data.",
    "Benign vs malignant only: normal scans and other findings are outside the model's scope.",
)


@dataclass
class ModelCardFacts:
    """Everything the card says, gathered by the clinical step of a run."""

    run_id: str
    spec: ModelSpec
    dataset: Mapping[str, Any]  # JobData.description
    split: Mapping[str, Any]  # folds, n_train_pool, n_test, seed, dedupe, test_scoring
    cv: Mapping[str, float]  # <metric>_mean / <metric>_std
    test: Mapping[str, float]
    test_ci: Mapping[str, tuple[float, float]]
    calibration: Mapping[str, float]
    operating: Mapping[str, float]  # operating/* metrics
    localization: Mapping[str, float] | None = None
    external: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    provenance: Mapping[str, str] = field(default_factory=dict)  # git commit, created, ...
    n_parameters: int = 0


@dataclass
class Findings:
    """What the clinical step found, besides the cell's own scores."""

    calibration: CalibrationResult
    operating: dict[str, float]
    localization: dict[str, float]  # localization/<name>
    external: dict[str, dict[str, float]]


def write_model_card(
    ctx: JobContext,
    summary: CellSummary,
    scores: CellScores,
    model: LoadedModel,
    findings: Findings,
    path: Path,
) -> Path:
    """The card of the cell at `path`, from the metrics the job already computed."""
    test = scores.test_rows
    labels, probs = test["label"].to_numpy(), test["prob"].to_numpy()
    n_boot = int(ctx.cfg.evaluation.bootstrap)
    split = ctx.data.split
    facts = ModelCardFacts(
        run_id=summary.cell_run_id,
        spec=model.spec,
        dataset=ctx.data.description,
        split={
            "folds": len(split.folds),
            "n_train_pool": len(split.train_pool()),
            "n_test": len(test),
            "seed": int(ctx.cfg.seed),
            "test_scoring": str(ctx.cfg.cv.test_scoring),
        },
        cv=summary.cv,
        test=summary.test if len(test) else {},
        test_ci=(
            bootstrap_intervals(labels, probs, patient_groups(test), n_boot=n_boot)
            if len(test)
            else {}
        ),
        calibration={
            **findings.calibration.metrics,
            "bins": float(ctx.cfg.evaluation.calibration_bins),
        },
        operating=findings.operating,
        localization={k.split("/", 1)[1]: v for k, v in findings.localization.items()},
        external=findings.external,
        provenance={"created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")},
        n_parameters=sum(p.numel() for p in model.members[0].parameters()),
    )
    path.write_text(render_model_card(facts))
    return path


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render_model_card(facts: ModelCardFacts) -> str:
    spec = facts.spec
    data = facts.dataset
    lines = [
        f"# Model card: {spec.model.get('name', 'model')}, benign vs malignant breast ultrasound",
        "",
        f"MLflow run `{facts.run_id}`"
        + "".join(f", {k} `{v}`" for k, v in facts.provenance.items()),
        "",
        "## Model",
        f"- Architecture: `{spec.model}`, {facts.n_parameters:,} parameters per member; "
        f"an ensemble of {len(spec.members)} model(s) (mean probability).",
        f"- Input: {spec.preprocessing['channels']}-channel image, "
        f"{spec.preprocessing['resize']} ({spec.image_size} px), "
        f"{spec.preprocessing['normalization']}.",
        f"- Output: probability of `{spec.class_names[-1]}`; classes {spec.class_names}.",
        "",
        "## Intended use",
        "- Research on breast-ultrasound classification: reproducing Fus2Net and comparing "
        "models, calibration and saliency on public data.",
        "- Not for clinical use (see Limits).",
        "",
        "## Data and provenance",
        f"- Dataset `{data.get('name')}` from `{data.get('root')}`; fingerprint "
        f"`{str(data.get('fingerprint', ''))[:16]}`.",
        f"- {data.get('n_images')} images, per class {data.get('per_class')}; "
        f"{data.get('duplicate_groups', 0)} groups of (near-)duplicate images kept together.",
        "",
        "## Splits",
        f"- Held-out test set: {facts.split.get('n_test')} images, never used for training, "
        "model selection, calibration or thresholds.",
        f"- {facts.split.get('folds')}-fold cross-validation on the remaining "
        f"{facts.split.get('n_train_pool')} images (seed {facts.split.get('seed')}); test "
        f"predictions: {facts.split.get('test_scoring')}.",
        "",
        "## Metrics (malignant = positive, threshold 0.5)",
        *_table(
            ["metric", "cross-validation mean +- sd", "test", "test 95 % CI (bootstrap)"],
            [
                [
                    name,
                    f"{_f(facts.cv.get(name + '_mean'))} +- {_f(facts.cv.get(name + '_std'))}",
                    _f(facts.test.get(name)),
                    "{} - {}".format(*(_f(v) for v in facts.test_ci.get(name, (None, None)))),
                ]
                for name in METRICS
            ],
        ),
        "",
        "## Calibration",
        f"- Expected calibration error ({facts.calibration.get('bins', 15):.0f} bins): "
        f"out-of-fold {_f(facts.calibration.get('oof_ece'))}, "
        f"test {_f(facts.calibration.get('test_ece'))}.",
        f"- Recalibration fitted on out-of-fold predictions ({facts.spec.calibration_method}, "
        f"p' = sigmoid(logit(p) / T + b)): T = {_f(facts.calibration.get('temperature'), 2)}, "
        f"b = {_f(facts.calibration.get('bias'), 2)}; test ECE after it "
        f"{_f(facts.calibration.get('test_ece_calibrated'))}; test negative log-likelihood "
        f"{_f(facts.calibration.get('test_nll'))} before, "
        f"{_f(facts.calibration.get('test_nll_calibrated'))} after.",
        f"- Mean predicted malignant probability on test "
        f"{_f(facts.calibration.get('test_mean_prob'))} before and "
        f"{_f(facts.calibration.get('test_mean_prob_calibrated'))} after recalibration, vs "
        f"observed malignant share {_f(facts.calibration.get('test_prevalence'))}: a gap is a "
        "prior shift (class balancing in training, another prevalence); Platt's bias b can "
        "remove the first, a temperature neither.",
        "",
        "## Operating points (chosen on out-of-fold predictions, applied to test)",
        *_operating_table(facts.operating),
        "",
        "## Where the model looks (Grad-CAM)",
        *_localization_lines(facts.localization),
        "",
        "## External validation",
        *_external_lines(facts.external),
        "",
        "## Limits",
        *[f"- {text}" for text in LIMITATIONS],
        "",
    ]
    return "\n".join(lines)


def _operating_table(operating: Mapping[str, float]) -> list[str]:
    names = sorted({k.split("/")[1].split("_")[0] for k in operating if k.endswith("_threshold")})
    if not names:
        return ["- Not available (the validation predictions lacked a class)."]
    rows = []
    for name in names:
        get = lambda key, n=name: operating.get(f"operating/{n}_{key}")  # noqa: E731
        rows.append(
            [
                name,
                _f(get("threshold")),
                _f(get("oof_sensitivity")),
                _f(get("oof_specificity")),
                _f(get("test_sensitivity")),
                _f(get("test_specificity")),
            ]
        )
    header = ["point", "threshold", "oof sens.", "oof spec.", "test sens.", "test spec."]
    return _table(header, rows)


def _localization_lines(scores: Mapping[str, float] | None) -> list[str]:
    if not scores or not scores.get("n_images"):
        return ["- Not scored: the test images have no lesion masks (or Grad-CAM was disabled)."]
    return [
        f"- On {scores['n_images']:.0f} test images with lesion masks: "
        f"{_f(scores.get('cam_energy_in_mask'))} of the Grad-CAM energy lies inside the lesion "
        f"(chance, the masks' share of the image: {_f(scores.get('mask_area_fraction'))}); "
        f"the map's peak is on the lesion in {_f(scores.get('pointing_game'))} of images "
        "(pointing game).",
        "- Near-chance values mean the model decides from something other than the lesion "
        "(burned-in text, calipers, image borders): see `localization/gradcam_grid.png`.",
    ]


def _external_lines(external: Mapping[str, Mapping[str, float]]) -> list[str]:
    if not external:
        return ["- None (add datasets under `eval_datasets`)."]
    rows = [
        [
            name,
            _f(m.get("n_images"), 0),
            *(_f(m.get(k)) for k in ("auc", "sensitivity", "specificity", "ece")),
            _f(m.get("patient_auc")),
        ]
        for name, m in external.items()
    ]
    header = ["dataset", "images", "AUC", "sens.", "spec.", "ECE", "patient AUC"]
    crops = [
        f"- {name}, lesion-centred crops against its {_f(m['lesion_crop/n_images'], 0)} lesion "
        f"masks: the segmenter marks a lesion in {_f(m.get('lesion_crop/found'))} of images "
        f"(Dice {_f(m.get('lesion_crop/dice'))}); the crop holds the lesion's centre in "
        f"{_f(m.get('lesion_crop/centre_in_crop'))} and {_f(m.get('lesion_crop/mask_in_crop'))} "
        "of its area on average."
        for name, m in external.items()
        if m.get("lesion_crop/n_images")
    ]
    return _table(header, rows) + (["", *crops] if crops else [])

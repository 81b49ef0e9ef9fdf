"""`fus2net-predict MODEL INPUT...`: malignant probability, class and Grad-CAM overlay per image.

MODEL is a trained model: the job's output folder (or a fold_<k>/model.pt inside it), an MLflow
run id (`runs:/<id>` or the bare id: a cell run's fold ensemble, or one fold run's model), or a
registered model `models:/<name>/<version>` (`models:/<name>` = latest version). INPUT is image
files or folders (searched recursively; `*_mask*` files skipped).

Prints the model, the operating point (its threshold and where it was chosen), the calibration,
what the model was trained on (dataset, image count, fingerprint, dates, image sizes and modes),
then a table: per image its raw malignant probability (prob_malignant, which the threshold
decides on), the calibrated one (prob_calibrated) and the class. Unreadable files, and images
the model gives no finite probability for, go to stderr with their error, as does a notice for
each image unlike every training image (another size or mode); predictions.csv and
predictions.json in --out hold the same and more. Exit code: 0 when every image was predicted,
1 when any could not be, 2 when the model or the inputs cannot be used.

    fus2net-predict runs:/6408d6945c9746328776a934e81d2002 scans/ --out predictions/
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from fus2net.inference import LoadedModel, ModelSpec

log = logging.getLogger("fus2net.predict")
CHOSEN_ON = "out-of-fold predictions"  # where training chooses thresholds and calibration


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fus2net-predict",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("model", help="folder, weights file, run id or models:/<name>/<version>")
    parser.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    parser.add_argument("--out", type=Path, default=Path("predictions"), help="output folder")
    parser.add_argument(
        "--operating-point",
        default=None,
        help="sens95 / youden / default (0.5) / a threshold in [0, 1]; "
        "default: the model's target-sensitivity point",
    )
    parser.add_argument("--no-gradcam", action="store_true", help="skip the overlays (faster)")
    parser.add_argument(
        "--cam-target",
        choices=("predicted", "malignant"),
        default="predicted",
        help="class the Grad-CAM explains",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store for run ids and models:/ (default: MLFLOW_TRACKING_URI, else "
        "sqlite:///$FUS2NET_HOME/mlruns/mlflow.db as fus2net-train writes)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from fus2net.inference import load_model, predict_files
    from fus2net.tracking.uris import TrackingError, redact_logs

    redact_logs()  # an MLflow error may quote the store's URL, credentials included
    try:
        model = load_model(args.model, tracking_uri=args.tracking_uri)
        frame = predict_files(
            model,
            args.inputs,
            args.out,
            operating_point=args.operating_point,
            gradcam=not args.no_gradcam,
            cam_target=args.cam_target,
        )
    except (ValueError, FileNotFoundError, TrackingError) as err:
        log.error("%s", err)
        return 2
    failed = frame[frame["error"] != ""]
    done = frame[frame["error"] == ""]
    point, threshold = model.spec.threshold(args.operating_point)
    print(describe_model(model))
    print(describe_operating_point(point, threshold, given=args.operating_point is not None))
    print(describe_calibration(model.spec))
    print(describe_training_data(model.spec))
    if len(done):
        print()
        print(table(done))
    for row in failed.itertuples():
        print(f"{row.path}\tERROR: {row.error}", file=sys.stderr)
    for row in done[done["notice"] != ""].itertuples():
        print(f"{row.path}\tNOTICE: {row.notice}", file=sys.stderr)
    print(
        f"{len(done)} image(s) predicted at operating point {point}, {len(failed)} failed; "
        f"{args.out / 'predictions.csv'}, {args.out / 'predictions.json'}"
        + ("" if args.no_gradcam else f", overlays in {args.out / 'overlays'}"),
        file=sys.stderr,
    )
    return 1 if len(failed) else 0  # a script must not take a partial result for a whole one


def describe_model(model: LoadedModel) -> str:
    """`model <origin>: <members>, <architecture>, <size> px, <channels> channel(s)`."""
    spec = model.spec
    folds = [m.fold for m in spec.members]
    if len(folds) > 1:
        members = f"ensemble of {len(folds)} fold models (mean probability)"
    elif folds and folds[0] is None:
        members = "the refit on all training images"
    else:
        members = "one fold model"
    crop = spec.model.get("lesion_crop")  # set by lesion_crop=segmenter only
    architecture = str(spec.model.get("name", "?"))
    if crop:
        architecture += f" on lesion-centred crops ({crop.get('crop_size')} px)"
    return (
        f"model {model.origin}: {members}, {architecture}, "
        f"{spec.image_size} px, {spec.in_chans} channel(s)"
    )


def describe_operating_point(point: str, threshold: float, given: bool = False) -> str:
    """The operating point, its threshold, where the threshold comes from and what it decides."""
    from fus2net.inference.spec import DEFAULT_POINT

    if point == DEFAULT_POINT:
        origin = "the paper's decision rule"
    elif point == "youden":
        origin = f"chosen on {CHOSEN_ON} to maximise Youden's J = sensitivity + specificity - 1"
    elif match := re.fullmatch(r"sens(\d+)", point):
        origin = f"chosen on {CHOSEN_ON} for {match.group(1)} % sensitivity"
    elif given and _is_number(point):
        origin = "given by --operating-point"
    else:
        origin = f"chosen on {CHOSEN_ON}"
    if not given:
        origin += "; the model's default"
    return (
        f"operating point {point} (threshold {threshold:.4g}, {origin}): "
        f"malignant when prob_malignant >= {threshold:.4g}"
    )


def describe_calibration(spec: ModelSpec) -> str:
    """How prob_calibrated is made from the members' malignant probabilities."""
    if spec.temperature == 1.0 and spec.calibration_bias == 0.0:
        return "calibration none: prob_calibrated = prob_malignant"
    method = "" if spec.calibration_method == "none" else f" {spec.calibration_method}"
    return (
        f"calibration{method} (T {spec.temperature:.4g}, bias {spec.calibration_bias:+.4g}, "
        f"fitted on {CHOSEN_ON}): prob_calibrated = the members' mean of "
        "sigmoid(logit(p) / T + bias); the class uses prob_malignant"
    )


def describe_training_data(spec: ModelSpec) -> str:
    """What the model was trained on: dataset, image count, fingerprint, dates, sizes and modes
    ("not recorded" where an older package lacks them)."""
    from fus2net.inference.data_record import TrainingData

    return TrainingData.from_source(spec.source).describe()


def table(done: pd.DataFrame) -> str:
    """The predicted images in aligned columns: path, raw and calibrated probability, class."""
    paths = [str(p) for p in done["path"]]
    width = max(len("image"), *(len(p) for p in paths))
    head = ("prob_malignant", "prob_calibrated", "class")
    lines = [f"{'image':<{width}}  {head[0]}  {head[1]}  {head[2]}"]
    for path, row in zip(paths, done.itertuples(), strict=True):
        lines.append(
            f"{path:<{width}}  {row.prob_malignant:>{len(head[0])}.3f}  "
            f"{row.prob_calibrated:>{len(head[1])}.3f}  {row.predicted_class}"
        )
    return "\n".join(lines)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())

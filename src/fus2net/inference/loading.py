"""Load a trained (ensemble) model from a folder, an MLflow run, or the MLflow model registry.

All three end in the same folder layout (`fus2net_model.json` + weight files), read by
`load_package`, so a registered model predicts exactly like the run it came from.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fus2net.data.transforms import normalize
from fus2net.inference.adabn import adapt_batch_norm, has_batch_norm
from fus2net.inference.gradcam import CamTarget, ensemble_grad_cam, find_cam_layer
from fus2net.inference.model_registry import download_version
from fus2net.inference.spec import SPEC_FILE, Member, ModelSpec
from fus2net.inference.tta import malignant_probability
from fus2net.models import create_model
from fus2net.models.lesion_crop import LesionCropNet, lesion_boxes
from fus2net.models.weights import SAVE_HINT, WeightsFileError, load_weights
from fus2net.tracking import schema
from fus2net.tracking.mlflow_tracker import MlflowTracker
from fus2net.tracking.uris import (
    TrackingError,
    default_tracking_uri,
    normalize_tracking_uri,
    redact_uri,
    require_existing_store,
)

_RUN_ID = re.compile(r"^(runs:/)?([0-9a-f]{32})/?$")
WHAT_TO_PASS = (
    "pass the job's output folder (it holds fus2net_model.json and fold_*/model.pt), a weights "
    "file inside it, an MLflow run id (runs:/<id>) or a registered model (models:/<name>/<version>)"
)


@dataclass
class LoadedModel:
    """The members of an ensemble on CPU in eval mode, and the spec they were built from."""

    spec: ModelSpec
    members: list[nn.Module]
    cam_layers: list[str]
    origin: str

    def member_probabilities(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """(members, N) malignant probabilities for (N, S, S, C) uint8 resized images."""
        probs = np.zeros((len(self.members), len(images)), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = to_tensor(images[start : start + batch_size], self.spec)
                for k, member in enumerate(self.members):
                    prob = malignant_probability(member, x, self.spec.tta)
                    probs[k, start : start + len(x)] = prob.double().numpy()
        return probs

    def probabilities(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """The ensemble's malignant probability: the members' mean (as the test set is scored)."""
        return self.member_probabilities(images, batch_size).mean(axis=0)

    def adapted_to(self, images: np.ndarray, batch_size: int = 32) -> LoadedModel:
        """This ensemble with every member's batch-norm statistics re-estimated on `images`
        (AdaBN, `fus2net.inference.adabn`); members without batch norm are kept as they are."""
        batches = [
            to_tensor(images[start : start + batch_size], self.spec)
            for start in range(0, len(images), batch_size)
        ]
        members = [adapt_batch_norm(m, batches) if has_batch_norm(m) else m for m in self.members]
        return replace(self, members=members, origin=f"{self.origin} (AdaBN)")

    def lesion_maps(
        self, images: np.ndarray, batch_size: int = 32
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """For a lesion-crop ensemble (its members share the job's segmenter): each image's
        (S, S) bool lesion map at the image's size and its (4,) crop box in [0, 1]; else None."""
        member = self.members[0]
        if not isinstance(member, LesionCropNet):
            return None
        size, s = images.shape[1:3], member.settings
        maps, boxes = [], []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = to_tensor(images[start : start + batch_size], self.spec)
                probabilities = member.lesion_probabilities(x)  # once: the map and the box
                full = F.interpolate(probabilities, size=size, mode="bilinear")
                maps.append((full[:, 0] >= s.threshold).numpy())
                box = lesion_boxes(probabilities, s.threshold, s.margin, s.min_side)
                boxes.append(box.double().numpy())
        return np.concatenate(maps), np.concatenate(boxes)

    def grad_cams(self, images: np.ndarray, target: CamTarget = "predicted") -> np.ndarray:
        """(N, S, S) Grad-CAM maps in [0, 1], averaged over the members."""
        x = to_tensor(images, self.spec)
        return ensemble_grad_cam(self.members, x, self.cam_layers, target)


def to_tensor(images: np.ndarray, spec: ModelSpec) -> torch.Tensor:
    """(N, C, S, S) float32 of (N, S, S, C) uint8 images, normalised as in training."""
    norm = spec.input_normalization
    return torch.from_numpy(np.stack([normalize(im, norm).transpose(2, 0, 1) for im in images]))


def build_member(spec: ModelSpec, weights: Path) -> nn.Module:
    """The registry model of `spec` with `weights` (a plain state dict), in eval mode; a bad
    file is a ValueError naming it (no pickled code runs: `load_weights`)."""
    try:
        model = create_model(
            **spec.model,
            in_chans=spec.in_chans,
            num_classes=spec.num_classes,
            drop_rate=spec.drop_rate,
        )
    except TypeError as err:  # an option the model does not take (a hand-edited spec)
        raise ValueError(
            f"the model options in {SPEC_FILE} ({spec.model}) do not build a model: {err}"
        ) from None
    state = load_weights(weights)
    if not isinstance(state, dict):
        raise WeightsFileError(
            f"{weights}: holds a {type(state).__name__}, not a state dict of tensors; save one "
            f"with {SAVE_HINT}"
        )
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).splitlines()[0].rstrip(":")
        raise WeightsFileError(
            f"{weights}: its tensors do not fit the {spec.model.get('name', '?')} model that "
            f"{SPEC_FILE} describes ({first}); the file belongs to another model"
        ) from None
    return model.eval()


def _find_spec(path: Path) -> tuple[Path, Path | None]:
    """(spec file, the weights file asked for or None) for a folder, spec or weights path."""
    if path.is_dir():
        spec = path / SPEC_FILE
        if spec.is_file():
            return spec, None
        raise ValueError(f"{path}: no {SPEC_FILE} in this folder; {WHAT_TO_PASS}")
    if path.name == SPEC_FILE:
        return path, None
    for folder in (path.parent, path.parent.parent):
        if (folder / SPEC_FILE).is_file():
            return folder / SPEC_FILE, path
    raise ValueError(f"{path}: no {SPEC_FILE} beside it or in its parent folder; {WHAT_TO_PASS}")


def load_package(path: str | Path) -> LoadedModel:
    """Load from a folder with `fus2net_model.json`, that file, or one weights file below it
    (then only that member, e.g. `fold_0/model.pt`)."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; {WHAT_TO_PASS}")
    spec_file, only = _find_spec(path)
    spec = ModelSpec.read(spec_file)
    if not spec.members:
        raise ValueError(f"{spec_file} lists no ensemble members (its 'members' field is empty)")
    files = [(spec_file.parent / m.weights).resolve() for m in spec.members]
    if only is not None:
        files = [f for f in files if f == only] or [only]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{spec_file} lists weights that do not exist: {', '.join(missing)}; the folder is "
            "incomplete (was a fold run deleted or tracking.log_checkpoints false?)"
        )
    members = [build_member(spec, f) for f in files]
    layer = spec.cam_layer or "auto"
    layers = [
        find_cam_layer(m, spec.image_size, spec.in_chans) if layer == "auto" else layer
        for m in members
    ]
    return LoadedModel(spec, members, layers, origin=str(path))


def load_from_run(tracker: MlflowTracker, run_id: str, folder: Path) -> LoadedModel:
    """A cell run's ensemble (spec logged by the clinical step, weights from its fold runs'
    `checkpoint/model.pt`), or one fold run's own model."""
    run = tracker.get_run(run_id)
    cell_id, fold = run_id, None
    if schema.is_role(run, schema.Role.FOLD):
        fold_run = schema.FoldRun(run)
        cell_id, fold = fold_run.cell_id, fold_run.fold
    spec_path = f"{schema.MODEL_DIR}/{SPEC_FILE}"
    try:
        spec = ModelSpec.read(tracker.download_artifacts(cell_id, spec_path, folder))
    except Exception as err:
        raise ValueError(
            f"run {cell_id} has no {spec_path} artifact (trained before prediction "
            f"support, or evaluation.enabled=false): {err}"
        ) from err
    if fold is not None:  # that run's own weights, whatever the cell scored the test set with
        sources = [(run_id, schema.FOLD_WEIGHTS, fold)]
    else:
        folds = schema.finished_folds(schema.fold_runs_of(cell_id, tracker.child_runs(cell_id)))
        sources = []
        for member in spec.members:
            if member.fold is None:
                sources.append((cell_id, schema.REFIT_WEIGHTS, None))
            elif member.fold in folds:
                sources.append((folds[member.fold].run_id, schema.FOLD_WEIGHTS, member.fold))
            else:
                raise ValueError(f"run {cell_id} has no fold run for fold {member.fold}")
    members = []
    for source, artifact, member_fold in sources:
        local = tracker.download_artifacts(source, artifact, folder / f"member_{len(members)}")
        members.append(Member(str(Path(local).relative_to(folder)), member_fold))
    replace(spec, members=members).write(folder)
    return load_package(folder)


def load_from_registry(tracking_uri: str, uri: str, folder: Path) -> LoadedModel:
    """A model version registered by the clinical step (the package folder inside it)."""
    local = download_version(tracking_uri, uri, folder)
    found = sorted(Path(local).rglob(SPEC_FILE))
    if not found:
        raise ValueError(f"{uri} holds no {SPEC_FILE}")
    return load_package(found[0].parent)


def load_model(ref: str, tracking_uri: str | None = None) -> LoadedModel:
    """Load `ref`: a path, an MLflow run id (`runs:/<id>` or the bare 32-hex id, in any
    experiment of the store: run ids are global), or `models:/<name>[/<version>]` (latest
    version when none is given). Reads only: a missing store is an error, never created."""
    run = _RUN_ID.match(ref)
    registered = ref.startswith("models:/")
    if Path(ref).expanduser().exists() or not (run or registered):
        return load_package(ref)
    uri = tracking_uri or default_tracking_uri()
    try:
        require_existing_store(uri)
    except TrackingError as err:
        raise FileNotFoundError(f"no MLflow store for {ref}: {err}") from None
    with tempfile.TemporaryDirectory(prefix="fus2net-model-") as tmp:
        if run:
            tracker = MlflowTracker.open_store(uri)
            if tracker.find_run(run.group(2)) is None:
                raise FileNotFoundError(
                    f"no run {run.group(2)} in any experiment of the MLflow store "
                    f"{redact_uri(tracker.uri)}; name the store fus2net-train wrote it to with "
                    "--tracking-uri (or MLFLOW_TRACKING_URI)"
                )
            loaded = load_from_run(tracker, run.group(2), Path(tmp))
        else:
            loaded = load_from_registry(normalize_tracking_uri(uri, create=False), ref, Path(tmp))
    loaded.origin = ref
    return loaded

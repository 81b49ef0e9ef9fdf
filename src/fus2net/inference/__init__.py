"""Run a trained model on new images: load it (run id, registry, folder) and predict files."""

from fus2net.inference.loading import LoadedModel, load_model, load_package
from fus2net.inference.predictor import collect_images, predict_files
from fus2net.inference.spec import SPEC_FILE, Member, ModelSpec

__all__ = [
    "SPEC_FILE",
    "LoadedModel",
    "Member",
    "ModelSpec",
    "collect_images",
    "load_model",
    "load_package",
    "predict_files",
]

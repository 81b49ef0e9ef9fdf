"""Thin console entry points; the logic lives in the modules they call."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_TOP = "train.yaml"  # the primary config, present in every usable config folder


class ConfigDirNotFound(FileNotFoundError):
    """Neither the installed package nor the checkout holds the Hydra configs."""


def config_dir() -> str:
    """The folder of the Hydra configs (`train.yaml` and its groups), as an absolute path.

    A wheel carries them as `fus2net/conf` (pyproject maps the top-level conf/ there); an
    editable install imports `<checkout>/src/fus2net` and reads `<checkout>/conf`. Looks, reads
    nothing else and writes nothing; raises ConfigDirNotFound naming both places it tried.
    """
    package = resources.files("fus2net")
    packaged = package / "conf"
    if isinstance(packaged, Path) and (packaged / _TOP).is_file():
        return str(packaged.resolve())
    tried = [str(packaged)]
    if isinstance(package, Path):  # <checkout>/src/fus2net -> <checkout>/conf
        checkout = package.resolve().parent.parent / "conf"
        if (checkout / _TOP).is_file():
            return str(checkout)
        tried.append(str(checkout))
    raise ConfigDirNotFound(
        f"fus2net's Hydra configs ({_TOP}) are not installed: looked in "
        + " and in ".join(tried)
        + ". Reinstall fus2net (pip install fus2net, or pip install -e . in a checkout)."
    )

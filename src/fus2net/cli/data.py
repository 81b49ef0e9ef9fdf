"""`fus2net-data`: check a dataset before training on it, with the same overrides as training.

    fus2net-data dataset=busi dataset.root=PATH data.channels=1

Prints the dataset summary (classes, sizes, modes, masks, patients, duplicates, problems) and
exits 1 when training would stop on the data, 0 otherwise: with `data.on_bad_image=skip`,
unreadable files are listed with what training would leave out, and do not fail the check.
Writes nothing (no Hydra output folder, no log).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from fus2net.data.records import DataError
from fus2net.data.summary import format_summary, summarize_dataset, usable_records

CONFIG_DIR = Path(__file__).resolve().parents[3] / "conf"

# Appended to the command line unless the user sets them: a check must leave no files behind.
_WRITE_NOTHING = {
    "hydra.output_subdir": "null",
    "hydra.run.dir": ".",
    "hydra/job_logging": "disabled",
    "hydra/hydra_logging": "disabled",
}


def check_dataset(cfg: DictConfig) -> int:
    """Load, decode and summarise `cfg.dataset`; print the report; return the exit code."""
    try:
        source = instantiate(cfg.dataset)
        records = source.load()
    except DataError as error:
        print(error.message(limit=len(error.problems)), file=sys.stderr)
        return 1
    except MissingMandatoryValue as error:
        print(f"Invalid dataset config: {error.full_key} is not set.", file=sys.stderr)
        print(f"Fix: give it on the command line, e.g. {error.full_key}=VALUE", file=sys.stderr)
        return 1
    except (InstantiationException, OmegaConfBaseException) as error:
        cause = error.__cause__ or error  # the source's own ValueError, not Hydra's wrapper
        print(f"Invalid dataset config: {cause}", file=sys.stderr)
        return 1
    distance = cfg.data.get("duplicate_distance", 4)
    summary = summarize_dataset(source, records, cfg.data.channels, duplicate_distance=distance)
    on_bad_image = str(cfg.data.get("on_bad_image", "error"))
    print(format_summary(summary, on_bad_image))
    trainable = on_bad_image == "skip" and bool(usable_records(summary))
    return 0 if summary.ok or trainable else 1


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    raise SystemExit(check_dataset(cfg))


def main() -> None:
    """Console-script entry point."""
    given = {arg.split("=", 1)[0].lstrip("+~") for arg in sys.argv[1:]}
    sys.argv += [f"{key}={value}" for key, value in _WRITE_NOTHING.items() if key not in given]
    _hydra_main()


if __name__ == "__main__":
    main()

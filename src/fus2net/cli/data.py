"""`fus2net-data`: check a dataset before training on it, with the same overrides as training.

    fus2net-data dataset=busi dataset.root=PATH data.channels=1

Prints the dataset summary (classes, sizes, modes, masks, patients, duplicates, problems) and
exits 1 when training would stop on the data, 0 otherwise: with `data.on_bad_image=skip`,
unreadable files are listed with what training would leave out, and do not fail the check.
Writes nothing (no Hydra output folder, no log).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import CompactHydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from fus2net.cli import ConfigDirNotFound, config_dir
from fus2net.data.records import DataError
from fus2net.images.imageio import ImageLimits
from fus2net.reporting.dataset_summary import format_summary, summarize_dataset, usable_records


def check_dataset(cfg: DictConfig, limits: ImageLimits | None = None) -> int:
    """Load, decode and summarise `cfg.dataset`; print the report; return the exit code.
    `limits`: the typed config's (`data.limits`), else read from `cfg.data`."""
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
    from fus2net.cell.job_data import image_limits
    from fus2net.config.preflight import ConfigError

    distance = cfg.data.duplicate_distance
    try:
        limits = limits or image_limits(cfg)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    summary = summarize_dataset(
        source, records, cfg.data.channels, duplicate_distance=distance, limits=limits
    )
    on_bad_image = str(cfg.data.on_bad_image)
    print(format_summary(summary, on_bad_image))
    trainable = on_bad_image == "skip" and bool(usable_records(summary))
    return 0 if summary.ok or trainable else 1


def _config_groups(conf: Path) -> str:
    """`group: option, ...` for each config group under `conf` (Hydra's own are left out)."""
    lines = []
    for folder in sorted(p for p in conf.iterdir() if p.is_dir() and p.name != "hydra"):
        options = sorted(f.stem for f in folder.glob("*.yaml"))
        if options:
            lines.append(f"  {folder.name}: {', '.join(options)}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    try:
        conf = config_dir()
        epilog = f"config groups (group=option), from {conf}:\n{_config_groups(Path(conf))}"
    except ConfigDirNotFound as error:
        epilog = str(error)
    parser = argparse.ArgumentParser(
        prog="fus2net-data",
        description=(
            "Check a dataset before training on it, with the same overrides as fus2net-train:\n"
            "print its summary and exit 1 when training would stop on the data, 0 otherwise.\n"
            "Writes nothing."
        ),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="Hydra overrides of the train config, e.g. dataset=busi dataset.root=PATH "
        "data.channels=1",
    )
    parser.add_argument(
        "-c",
        "--cfg",
        choices=["job"],
        help="print the composed config instead of checking the dataset (as fus2net-train's)",
    )
    parser.add_argument("--resolve", action="store_true", help="with --cfg: resolve ${...}")
    return parser.parse_args(argv)


def compose_config(overrides: list[str]) -> DictConfig:
    """The `train` config with `overrides`, as fus2net-train composes it; no Hydra run, so no
    output folder, no log file, no change of directory."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: exits with check_dataset's code, or 1 when the overrides
    do not compose (reported as Hydra reports them; HYDRA_FULL_ERROR=1 shows the traceback)."""
    args = parse_args(argv)
    try:
        cfg = compose_config(args.overrides)
    except ConfigDirNotFound as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except CompactHydraException as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(error, file=sys.stderr)
        if isinstance(error.__cause__, OmegaConfBaseException):
            print(error.__cause__, file=sys.stderr)
        print(
            "\nSet the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    if args.cfg:
        sys.stdout.write(OmegaConf.to_yaml(cfg, resolve=args.resolve))
        raise SystemExit(0)
    from fus2net.config.preflight import ConfigError
    from fus2net.config.validate import validate_config

    try:  # the schema fus2net-train checks: a typo'd key is named here too, not ignored
        typed = validate_config(cfg)
    except ConfigError as error:
        print(error, file=sys.stderr)
        raise SystemExit(1) from None
    raise SystemExit(check_dataset(cfg, typed.data.limits))


if __name__ == "__main__":
    main()

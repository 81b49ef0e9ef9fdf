"""What Hydra knows of the running job (sweep, mode, command-line overrides, group choices,
output folder, the keys a multirun varies), as the tags of its runs, for filtering in the UI.

Read here, at the top, from Hydra's own config: nothing below `config` reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from fus2net.tracking import schema
from fus2net.tracking.provenance import override_key
from fus2net.tracking.uris import redact_uri


def hydra_tags(cfg_sweep: str | None) -> dict[str, str]:
    """Sweep id, the job's command-line overrides and group choices, for filtering in the UI."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return {schema.SWEEP: cfg_sweep or schema.NO_SWEEP}
    tags: dict[str, str] = {}
    multirun = hc.mode == RunMode.MULTIRUN
    if cfg_sweep:
        tags[schema.SWEEP] = cfg_sweep
    elif multirun:
        tags[schema.SWEEP] = str(hc.sweep.dir)
    else:
        tags[schema.SWEEP] = schema.NO_SWEEP
    tags[schema.HYDRA_MODE] = "multirun" if multirun else "run"
    overrides = list(hc.overrides.task)
    tags[schema.OVERRIDES] = " ".join(redact_uri(o) for o in overrides) or "(none)"
    for item in overrides:
        value = item.lstrip("+~").partition("=")[2]
        tags[schema.tag_key(f"{schema.OVERRIDE_PREFIX}{override_key(item)}")] = redact_uri(value)
    for group, choice in hc.runtime.choices.items():
        if not group.startswith("hydra"):
            tags[schema.tag_key(f"{schema.CHOICE_PREFIX}{group}")] = str(choice)
    tags[schema.HYDRA_OUTPUT_DIR] = str(hc.runtime.output_dir)
    if multirun:
        tags[schema.SWEPT] = " ".join(swept_keys(hc))
    return tags


def swept_keys(hc: Any) -> list[str]:
    """The keys a multirun varies: its sweeper's `params` and the command line's sweep
    overrides (`optimizer=adam,sgd`), read by Hydra's own parser from the `multirun.yaml` the
    sweeper saved in the sweep folder; the keys every job shares are left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    params = hc.sweeper.get("params") or {}
    candidates = [f"{key}={value}" for key, value in params.items()]
    saved = Path(str(hc.sweep.dir)) / "multirun.yaml"
    if saved.is_file():
        candidates += list(OmegaConf.load(saved).hydra.overrides.task)
    keys = []
    for item in candidates:
        try:
            swept = parser.parse_override(item).is_sweep_override()
        except Exception:  # a sweeper's own syntax Hydra does not parse: varied all the same
            swept = True
        if swept:
            keys.append(override_key(item))
    return list(dict.fromkeys(keys))

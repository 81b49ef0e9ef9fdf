"""Leave-one-source-out: train on every member of a pooled dataset but one, score that one as a
hospital the model never saw (`cv.holdout_source=<member>`).

Why: in-domain cross-validation rewards what does not travel. Sweeping the held-out member
(`-m cv.holdout_source=busi,breast`) gives, for each source, a model chosen and ensembled by
cross-validation on the others and scored on it: DomainBed's leave-one-domain-out selection
(Gulrajani & Lopez-Paz, ICLR 2021). Each held-out cell is an ordinary cell (its own key, folds,
test split and MLflow runs) whose held-out member is an `eval_datasets` entry, logged again as
`heldout/<metric>`; the cells of one protocol share a `fus2net.loso_key` tag, and once all of
them are finished the last one logs a protocol run (`fus2net.role=loso`) with every source's
held-out metrics and their mean (`experiment.loso_summary`).
"""

from __future__ import annotations

import copy

from omegaconf import DictConfig, open_dict

from fus2net.config.preflight import ConfigError

POOLED_TARGET = "fus2net.data.sources.PooledSource"


def pooled_members(cfg: DictConfig) -> list[str]:
    """The member names of the configured pooled dataset ([] when it is not pooled)."""
    if str(cfg.dataset.get("_target_", "")) != POOLED_TARGET:
        return []
    return [str(name) for name in (cfg.dataset.get("members") or {})]


def protocol_key(cfg: DictConfig) -> str:
    """What every held-out cell of one protocol shares: the configuration with the whole pool
    and no `cv.holdout_source` (paths, tracking and the sweep aside)."""
    from fus2net.config.factories import resolved_container
    from fus2net.tracking.provenance import cell_key

    whole = copy.deepcopy(cfg)
    with open_dict(whole):
        whole.cv.holdout_source = None
    return cell_key(resolved_container(whole))


def holdout_config(cfg: DictConfig) -> tuple[DictConfig, str | None]:
    """`cfg` with `cv.holdout_source`'s member moved from the pool to `eval_datasets` (the same
    config, its own options kept), and the protocol's key; `(cfg, None)` when no member is
    held out."""
    member = cfg.cv.holdout_source
    if member is None:
        return cfg, None
    members = pooled_members(cfg)
    if not members:
        raise ConfigError(
            f"cv.holdout_source={member}: holds out a member of a pooled dataset, and "
            f"dataset={cfg.dataset.get('name', '?')} is not pooled; use dataset=busi_breast or "
            "dataset=pooled '+dataset@dataset.members.NAME=...' "
            "(docs/real-data.md, 'Leave-one-source-out')"
        )
    if member not in members:
        raise ConfigError(
            f"cv.holdout_source={member}: not a member of dataset {cfg.dataset.name}; "
            f"use one of {', '.join(members)}"
        )
    if len(members) < 2:
        raise ConfigError(
            f"cv.holdout_source={member}: dataset {cfg.dataset.name} has no other member to "
            "train on; add members, or set cv.holdout_source=null"
        )
    if member in (cfg.get("eval_datasets") or {}):
        raise ConfigError(
            f"cv.holdout_source={member}: eval_datasets already has an entry {member!r}; drop "
            f"it (~eval_datasets.{member}) or rename it"
        )
    key = protocol_key(cfg)
    held_out = copy.deepcopy(cfg)
    with open_dict(held_out):
        held_out.eval_datasets = held_out.get("eval_datasets") or {}
        held_out.eval_datasets[member] = copy.deepcopy(held_out.dataset.members[member])
        del held_out.dataset.members[member]
    return held_out, key

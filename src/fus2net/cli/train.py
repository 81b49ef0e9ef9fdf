"""`fus2net-train`: the Hydra app. `fus2net-train -m optimizer=adam,rmsprop,sgd` is a sweep."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from fus2net.cli import CONF_DIR

log = logging.getLogger("fus2net")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from fus2net.data.records import DataError
    from fus2net.tracking.mlflow_tracker import TrackingError
    from fus2net.training.crossval import format_summary, run_job
    from fus2net.training.interrupts import JobInterrupted
    from fus2net.training.preflight import ConfigError

    try:
        summary = run_job(cfg)
    except (ConfigError, DataError, TrackingError) as exc:
        log.error("%s", exc)
        sys.exit(2)
    except JobInterrupted as exc:
        log.error("%s: runs marked KILLED; the same command resumes the job", exc)
        sys.exit(exc.exit_code)
    print(format_summary(summary), flush=True)
    if summary.status in ("FAILED", "KILLED"):
        log.error("cell %s %s: %s", summary.cell_key, summary.status, summary.error)
        if HydraConfig.get().mode != RunMode.MULTIRUN:  # in a sweep the other jobs go on
            sys.exit(1)
        return None
    auc = summary.cv.get("auc_mean", summary.test.get("auc"))
    return float(auc) if auc is not None else None


if __name__ == "__main__":
    main()

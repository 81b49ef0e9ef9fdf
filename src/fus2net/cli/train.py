"""`fus2net-train`: the Hydra app. `fus2net-train -m optimizer=adam,rmsprop,sgd` is a sweep."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from fus2net.cli import CONF_DIR

log = logging.getLogger("fus2net")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from fus2net.data.records import DataError
    from fus2net.tracking.mlflow_tracker import TrackingError
    from fus2net.training.crossval import format_summary, run_job
    from fus2net.training.preflight import ConfigError

    try:
        summary = run_job(cfg)
    except (ConfigError, DataError, TrackingError) as exc:
        log.error("%s", exc)
        sys.exit(2)
    print(format_summary(summary), flush=True)
    auc = summary.cv.get("auc_mean", summary.test.get("auc"))
    return float(auc) if auc is not None else None


if __name__ == "__main__":
    main()

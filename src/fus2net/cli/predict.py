"""`fus2net-predict MODEL INPUT...`: malignant probability, class and Grad-CAM overlay per image.

MODEL is a trained model: the job's output folder (or a fold_<k>/model.pt inside it), an MLflow
run id (`runs:/<id>` or the bare id: a cell run's fold ensemble, or one fold run's model), or a
registered model `models:/<name>/<version>` (`models:/<name>` = latest version). INPUT is image
files or folders (searched recursively; `*_mask*` files skipped).

    fus2net-predict runs:/6408d6945c9746328776a934e81d2002 scans/ --out predictions/
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("fus2net.predict")


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
    from fus2net.tracking.uris import TrackingError

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
    for row in done.itertuples():
        print(f"{row.path}\t{row.prob_malignant:.3f}\t{row.predicted_class}")
    for row in failed.itertuples():
        print(f"{row.path}\tERROR: {row.error}", file=sys.stderr)
    point = done["operating_point"].iloc[0] if len(done) else "-"
    print(
        f"{len(done)} image(s) predicted at operating point {point}, {len(failed)} failed; "
        f"{args.out / 'predictions.csv'}, {args.out / 'predictions.json'}"
        + ("" if args.no_gradcam else f", overlays in {args.out / 'overlays'}"),
        file=sys.stderr,
    )
    return 1 if len(failed) and not len(done) else 0


if __name__ == "__main__":
    sys.exit(main())

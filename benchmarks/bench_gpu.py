"""GPU benchmarks (issue "Performance"): one device call, see benchmarks/gpu/run.sh.

    python benchmarks/bench_gpu.py throughput [--batch-sizes 16 64 128]
    python benchmarks/bench_gpu.py loader --root BUSI_ROOT [--worker-counts 0 4 8 12]
    python benchmarks/bench_gpu.py paper --root BUSI_ROOT [--workers 12]

`paper` runs the paper's protocol (299 px, batch 16, 10 folds x 53 epochs, 50 + 50 test set)
through the project's own data pipeline and Lightning training (`train_fold`), without MLflow
(the GPU image lacks it), and reports the wall time and whether the GPU was data-bound.
`loader` measures the training loader alone by worker count against the bare step rate: whether
the CPU can feed the GPU at all, or augmentation has to move onto the GPU.
`--trainer cpu --folds 2 --epochs 1 --image-size 96` runs the same code on a CPU for a check.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "outputs" / "benchmarks"


# Issue "Training at the hardware's speed": the paper protocol on BUSI in under 5 min on one H200.
PAPER_TARGET_S = 300


def record(kind: str, **values: object) -> dict:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    row = {
        "benchmark": kind,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "device": device,
        "torch": torch.__version__,
        **values,
    }
    if torch.cuda.is_available():
        row["peak_gpu_mem_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"gpu-{dt.date.today()}.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    return row


def step_rate(batch_size: int, image_size: int, mode: str, steps: int = 30) -> float:
    """Training images/s on one fixed batch: fp32, bf16 (+ channels_last), or + torch.compile."""
    from fus2net.models import create_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = create_model("fus2net").to(device)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    y = torch.randint(0, 2, (batch_size,), device=device)
    bf16 = mode != "fp32"
    if bf16:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    net = torch.compile(model) if mode == "bf16+compile" else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def bench_throughput(args: argparse.Namespace) -> None:
    torch.backends.cudnn.benchmark = True
    for batch_size in args.batch_sizes:
        rates = {
            mode: round(step_rate(batch_size, args.image_size, mode), 1)
            for mode in ("fp32", "bf16", "bf16+compile")
        }
        record(
            "gpu_throughput",
            image_size=args.image_size,
            batch_size=batch_size,
            images_per_s=rates,
            bf16_speedup=round(rates["bf16"] / rates["fp32"], 2),
        )


def paper_config(args: argparse.Namespace):
    """The `experiment=paper` config on BUSI at `args.root`, with the benchmark's overrides."""
    from hydra import compose, initialize_config_dir

    from fus2net.cli import config_dir

    overrides = [
        "experiment=paper",
        "dataset=busi",
        f"dataset.root={Path(args.root).resolve()}",
        f"trainer={args.trainer}",
        f"data.num_workers={args.workers}",
        "trainer.enable_progress_bar=false",
    ]
    if args.folds:
        overrides.append(f"cv.folds={args.folds}")
    if args.epochs:
        overrides.append(f"trainer.max_epochs={args.epochs}")
    if args.image_size != 299:
        overrides.append(f"data.image_size={args.image_size}")
    if args.compile:
        overrides.append("trainer.compile=true")
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def loader_rate(cfg, data, workers: int, batches: int) -> float:
    """Images/s the fold-0 training loader delivers with `workers` processes and no model:
    the CPU side's ceiling (cache, flip balance, augmentation, collate, pinning), once the
    workers' first prefetched batches are out (those were made before the clock started)."""
    from fus2net.config.factories import fold_datamodule
    from fus2net.training.fold import FoldData

    cfg.data.num_workers = workers
    train_idx, val_idx = data.split.fold(0)
    fold = FoldData(data.cache.images, data.cache.labels, train_idx, val_idx, data.split.test)
    module = fold_datamodule(cfg, fold, int(cfg.seed))
    epochs = itertools.chain.from_iterable(module.train_dataloader() for _ in itertools.count())
    for _ in range(2 * workers + 1):  # the loader prefetches 2 batches per worker
        next(epochs)
    start, images = time.perf_counter(), 0
    for _, batch in zip(range(batches), epochs, strict=False):
        images += int(batch[0].shape[0])
    return images / (time.perf_counter() - start)


def bench_loader(args: argparse.Namespace) -> None:
    """Loader images/s by worker count, set against the bare bf16 step rate: whether the CPU
    can keep the GPU busy (if not, augmentation belongs on the GPU)."""
    from fus2net.cell.job_data import prepare_data

    cfg = paper_config(args)
    with tempfile.TemporaryDirectory() as tmp:
        cfg.paths.root = tmp
        data = prepare_data(cfg)
        rates = {w: round(loader_rate(cfg, data, w, args.batches), 1) for w in args.worker_counts}
    step = step_rate(int(cfg.data.batch_size), int(cfg.data.image_size), "bf16")
    best = max(rates.values())
    record(
        "loader",
        image_size=int(cfg.data.image_size),
        batch_size=int(cfg.data.batch_size),
        cpu_cores=os.cpu_count(),
        loader_images_per_s_by_workers=rates,
        step_only_images_per_s=round(step, 1),
        cpu_keeps_up=best >= step,
    )


def bench_paper(args: argparse.Namespace) -> None:
    from fus2net.cell.job_data import prepare_data
    from fus2net.config.factories import train_fold
    from fus2net.training.callbacks import EpochThroughput
    from fus2net.training.fold import FitRun, FoldData

    cfg = paper_config(args)
    with tempfile.TemporaryDirectory() as tmp:
        cfg.paths.root = tmp
        start = time.perf_counter()
        data = prepare_data(cfg)
        prep = time.perf_counter() - start
        fold_seconds, epochs = [], []
        labels = data.cache.labels
        planned = len(data.split.folds)
        for fold in range(planned):
            elapsed = time.perf_counter() - start
            if fold_seconds and elapsed + float(np.mean(fold_seconds)) > args.budget_s:
                print(f"budget of {args.budget_s} s reached after {fold} folds", flush=True)
                break
            train_idx, val_idx = data.split.fold(fold)
            throughput = EpochThroughput(log=False)
            t0 = time.perf_counter()
            train_fold(
                cfg,
                FoldData(data.cache.images, labels, train_idx, val_idx, data.split.test),
                seed=int(cfg.seed) + fold,
                num_classes=2,
                run=FitRun(Path(tmp) / f"fold_{fold}", callbacks=[throughput]),
            )
            fold_seconds.append(time.perf_counter() - t0)
            epochs += throughput.history[1:]  # the first epoch of a fold warms up (and compiles)
            print(f"fold {fold}: {fold_seconds[-1]:.1f} s", flush=True)
        total = time.perf_counter() - start
    projected = prep + float(np.mean(fold_seconds)) * planned  # = total when every fold ran
    step_only = step_rate(int(cfg.data.batch_size), int(cfg.data.image_size), "bf16")
    # training batches only (validation, checkpoints and predictions aside), as the step rate
    train_rate = sum(n for n, _ in epochs) / sum(t for _, t in epochs) if epochs else float("nan")
    record(
        "paper_protocol",
        dataset="BUSI (benign+malignant)",
        folds_run=len(fold_seconds),
        folds_planned=planned,
        epochs=int(cfg.trainer.max_epochs),
        image_size=int(cfg.data.image_size),
        workers=args.workers,
        compile=bool(cfg.trainer.compile),  # the trainer's default unless --compile
        prepare_s=round(prep, 1),
        fold_s=[round(s, 1) for s in fold_seconds],
        total_s=round(total, 1),
        train_images_per_s=round(train_rate, 1),
        step_only_images_per_s=round(step_only, 1),
        data_bound=train_rate < 0.8 * step_only,
        projected_total_s=round(projected, 1),
        target_s=PAPER_TARGET_S,
        met=projected < PAPER_TARGET_S,
        met_is_projected=len(fold_seconds) < planned,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["throughput", "loader", "paper"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--root", default=str(REPO / ".busi" / "Dataset_BUSI_with_GT"))
    parser.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    parser.add_argument("--trainer", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--folds", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--worker-counts", type=int, nargs="+", default=[0, 4, 8, 12])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument(
        "--budget-s",
        type=float,
        default=float("inf"),
        help="paper: stop before a fold that would end past this many seconds, and project the "
        "total from the folds run (a device call is limited to 600 s)",
    )
    args = parser.parse_args()
    {"throughput": bench_throughput, "loader": bench_loader, "paper": bench_paper}[args.what](args)


if __name__ == "__main__":
    main()

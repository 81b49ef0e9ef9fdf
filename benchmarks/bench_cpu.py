"""CPU benchmarks of the training path (issue "Performance"): run on an otherwise idle machine.

    python benchmarks/bench_cpu.py throughput      # fp32 baseline vs the fast path, 299 px
    python benchmarks/bench_cpu.py pipeline        # fus2net-train vs a minimal hand-written loop
    python benchmarks/bench_cpu.py precision-auc   # bf16 and fp32 reach the same validation AUC
    python benchmarks/bench_cpu.py augmentation    # augmentation per image vs a training step
    python benchmarks/bench_cpu.py all

Every sub-command prints a JSON line per measurement and appends it to
`outputs/benchmarks/cpu-<date>.jsonl`; benchmarks/README.md quotes those lines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "outputs" / "benchmarks"
CONV_OPS = {"aten::mkldnn_convolution", "aten::convolution_backward"}
# Issue "Training at the hardware's speed": the fast path over plain fp32 at 299 px must reach
# min(5, 0.8 x this CPU's ceiling), and fus2net-train 0.95 of a hand-written loop.
TARGET_SPEEDUP, TARGET_CEILING_SHARE, TARGET_PIPELINE_RATIO = 5.0, 0.8, 0.95


def machine() -> dict:
    from fus2net.training.precision import cpu_supports_bf16

    cpu = "unknown"
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "bf16_native": cpu_supports_bf16(),
        "python": platform.python_version(),
    }


def record(kind: str, **values: object) -> dict:
    row = {
        "benchmark": kind,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **values,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"cpu-{dt.date.today()}.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    return row


def model_preset(name: str) -> dict:
    """`create_model` options of the `conf/model/<name>.yaml` preset (`model=<name>`)."""
    import yaml

    from fus2net.cli import config_dir

    return yaml.safe_load((Path(config_dir()) / "model" / f"{name}.yaml").read_text())


def make_train_step(
    image_size: int,
    batch_size: int,
    *,
    bf16: bool,
    channels_last: bool,
    compile: bool = False,
    model_options: dict | None = None,
) -> Callable[[], None]:
    """One training step (forward, backward, Adam) on a fixed random batch of Fus2Net, or of
    the `model_options` network; `compile` compiles the network as `trainer.compile=true` does
    (fus2net.training.compiled)."""
    from fus2net.models import create_model
    from fus2net.training.compiled import compile_network

    torch.manual_seed(0)
    model = create_model(**(model_options or {"name": "fus2net"}))
    x = torch.randn(batch_size, 3, image_size, image_size)
    y = torch.randint(0, 2, (batch_size,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    model.train()
    if compile:
        compile_network(model, "cpu")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()

    return step


def interleaved_rates(
    steps: dict[str, Callable[[], None]], batch_size: int, rounds: int, steps_per_round: int
) -> dict[str, list[float]]:
    """Images/s of each (warm) step, measured in alternating rounds: a slow spell of a shared
    host then hits every variant alike instead of deciding a ratio."""
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            step()
            start = time.perf_counter()
            for _ in range(steps_per_round):
                step()
            rates[name].append(steps_per_round * batch_size / (time.perf_counter() - start))
    return rates


def step_profile(step: Callable[[], None], steps: int = 3, top: int = 10) -> tuple[float, list]:
    """Share of a (warm) step's CPU time spent in convolutions (forward and backward), and the
    `top` operators by self time as [name, share, calls per step]: where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS)
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    ops = [[e.key, round(e.self_cpu_time_total / total, 3), e.count // steps] for e in ranked]
    return conv / total, ops


def gemm_peak_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 20) -> float:
    """The best GFLOP/s this CPU reaches on a large square matmul: a ceiling for conv training."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def train_gflop_per_image(image_size: int) -> float:
    """FLOPs of one Fus2Net training image (forward + backward), counted by PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode

    from fus2net.models import create_model

    model = create_model("fus2net")
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(2, 3, image_size, image_size)).sum().backward()
    return counter.get_total_flops() / 2 / 1e9


def bench_throughput(args: argparse.Namespace) -> None:
    """Plain fp32, bf16 + channels_last eager (before) and the `trainer=cpu` fast path (bf16 +
    channels_last + compiled: after), set against this CPU's own matmul ceiling.

    `ceiling_speedup` is the best bf16 matmul rate over the FLOP rate of the fp32 baseline: the
    speedup a perfect bf16 kernel would give. `speedup_if_non_conv_ops_were_free` is what is
    left once everything but the convolutions is fused away. The top operators of the eager
    and the compiled bf16 step (inductor's fused kernels by name) show what compiling changed.
    """
    import torch._inductor.config as inductor_config

    torch.set_num_threads(os.cpu_count() or 1)
    inductor_config.cpp.enable_kernel_profile = True  # fused kernels named in the profile
    size, batch = args.image_size, args.batch_size
    steps = {
        "fp32": make_train_step(size, batch, bf16=False, channels_last=False),
        "bf16_channels_last": make_train_step(size, batch, bf16=True, channels_last=True),
        "fast": make_train_step(size, batch, bf16=True, channels_last=True, compile=True),
    }
    start = time.perf_counter()
    for step in steps.values():  # warm-up; the first fast step compiles
        for _ in range(args.warmup):
            step()
    warmup_s = time.perf_counter() - start
    rates = interleaved_rates(steps, batch, args.rounds, args.steps)
    median = {name: float(np.median(r)) for name, r in rates.items()}
    base, eager, fast = median["fp32"], median["bf16_channels_last"], median["fast"]
    eager_conv_share, eager_ops = step_profile(steps["bf16_channels_last"])
    fast_conv_share, fast_ops = step_profile(steps["fast"])
    _, base_ops = step_profile(steps["fp32"], steps=1)
    gflop = train_gflop_per_image(size)
    peak_fp32, peak_bf16 = gemm_peak_gflops(torch.float32), gemm_peak_gflops(torch.bfloat16)
    ceiling = peak_bf16 / (base * gflop)
    target = min(TARGET_SPEEDUP, TARGET_CEILING_SHARE * ceiling)
    record(
        "throughput",
        machine=machine(),
        image_size=args.image_size,
        batch_size=args.batch_size,
        rounds=args.rounds,
        steps_per_round=args.steps,
        fp32_images_per_s=round(base, 2),
        bf16_channels_last_images_per_s=round(eager, 2),
        fast_images_per_s=round(fast, 2),
        fast_path="bf16 autocast + channels_last + trainer.compile (inductor)",
        rounds_images_per_s={name: [round(r, 2) for r in rs] for name, rs in rates.items()},
        speedup=round(fast / base, 2),
        eager_bf16_speedup=round(eager / base, 2),
        compile_gain=round(fast / eager, 2),
        target_speedup=round(target, 2),
        met=fast / base >= target,
        warmup_s_incl_compile=round(warmup_s, 1),
        train_gflop_per_image=round(gflop, 2),
        fp32_gflops=round(base * gflop, 1),
        fast_gflops=round(fast * gflop, 1),
        gemm_peak_fp32_gflops=round(peak_fp32, 1),
        gemm_peak_bf16_gflops=round(peak_bf16, 1),
        fast_share_of_peak=round(fast * gflop / peak_bf16, 2),
        eager_bf16_conv_time_share=round(eager_conv_share, 2),
        fast_conv_time_share=round(fast_conv_share, 2),
        # nearly all FLOPs are convolutions (99.9 %), so this is the convolutions' own rate
        fast_conv_gflops=round(fast * gflop / fast_conv_share, 1),
        speedup_if_non_conv_ops_were_free=round(fast / base / fast_conv_share, 2),
        ceiling_speedup=round(ceiling, 2),
        top_ops_fp32=base_ops,
        top_ops_bf16_channels_last=eager_ops,
        top_ops_fast=fast_ops,
    )
    for name, ops in (
        ("fp32", base_ops), ("bf16 + channels_last, eager (before)", eager_ops),
        ("fast path, compiled (after)", fast_ops),
    ):  # fmt: skip
        print(f"top operators by self time, {name} step:", flush=True)
        for op, share, calls in ops:
            print(f"  {share:6.1%}  {op[:90]}  ({calls} calls/step)", flush=True)


def hand_loop(
    images: np.ndarray, labels: np.ndarray, train_idx: np.ndarray, epochs: int, batch_size: int
) -> tuple[float, int]:
    """The minimal loop: same cached images, per-image standardisation, the fast path (bf16 +
    channels_last + the compiled network)."""
    from fus2net.data.transforms import standardize
    from fus2net.models import create_model
    from fus2net.training.compiled import compile_network

    torch.manual_seed(0)
    model = create_model("fus2net").to(memory_format=torch.channels_last)
    compile_network(model, "cpu")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    rng = np.random.default_rng(0)
    seen = 0
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = rng.permutation(train_idx)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[i : i + batch_size]
            x = np.stack([standardize(images[j]) for j in idx]).transpose(0, 3, 1, 2)
            xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(
                    model(xt).float(), torch.from_numpy(labels[idx]).long()
                )
            loss.backward()
            optimizer.step()
            seen += len(idx)
        times.append(time.perf_counter() - start)
    per_epoch = len(train_idx) // batch_size * batch_size
    steady = per_epoch / float(np.median(times[1:] if len(times) > 1 else times))
    return steady, seen


def run_train(overrides: list[str], home: Path) -> float:
    env = {**os.environ, "FUS2NET_HOME": str(home)}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "fus2net.cli.train", *overrides],
        cwd=home,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def mlflow_runs(home: Path, role: str) -> tuple:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("fus2net")
    return client, client.search_runs([exp.experiment_id], f"tags.`fus2net.role` = '{role}'")


def bench_pipeline(args: argparse.Namespace) -> None:
    """Steady-state training images/s of fus2net-train (Lightning, Hydra, MLflow, loading,
    `paper` augmentation, flip balance) vs the hand loop on the same cached images."""
    from fus2net.data.cache import ImageCache
    from fus2net.data.sources import SyntheticSource

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        common = [
            f"dataset.n_images={args.n_images}",
            f"data.image_size={args.image_size}",
            f"data.batch_size={args.batch_size}",
            "cv.fold=0",
            "cv.folds=5",
            f"trainer.max_epochs={args.epochs}",
            "trainer.enable_progress_bar=false",
            "tracking.log_checkpoints=false",
        ]
        wall = run_train(common, home)
        client, folds = mlflow_runs(home, "fold")
        history = client.get_metric_history(folds[0].info.run_id, "perf/train_images_per_s")
        pipeline = float(np.median([m.value for m in history if m.step >= 1]))
        records = SyntheticSource(
            root=home / "data" / "synthetic", n_images=args.n_images, progress=False
        ).load()
        cache = ImageCache.build(
            records, image_size=args.image_size, channels=3, mode="memory", progress=False
        )
        train_idx = np.arange(int(len(records) * 0.8 * 0.8))
        torch.set_num_threads(os.cpu_count() or 1)
        hand, _ = hand_loop(cache.images, cache.labels, train_idx, args.epochs, args.batch_size)
        record(
            "pipeline",
            machine=machine(),
            image_size=args.image_size,
            batch_size=args.batch_size,
            epochs=args.epochs,
            pipeline_images_per_s=round(pipeline, 2),
            hand_loop_images_per_s=round(hand, 2),
            ratio=round(pipeline / hand, 3),
            target_ratio=TARGET_PIPELINE_RATIO,
            met=pipeline / hand >= TARGET_PIPELINE_RATIO,
            pipeline_job_wall_s=round(wall, 1),
            # the fus2net-train child's own peak (peak_rss_mib is this process: the hand loop)
            pipeline_job_peak_rss_mib=round(
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
            ),
        )


def bench_precision_auc(args: argparse.Namespace) -> None:
    """Same folds, same seed: bf16-mixed vs 32-true validation AUC, paired by fold."""
    from scipy.stats import ttest_rel

    results = {}
    for precision in ("bf16-mixed", "32-true"):
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            wall = run_train(
                [
                    f"data.image_size={args.image_size}",
                    f"cv.folds={args.folds}",
                    f"trainer.max_epochs={args.epochs}",
                    "trainer.enable_progress_bar=false",
                    f"trainer.precision={precision}",
                    "tracking.log_checkpoints=false",
                ],
                home,
            )
            _, cells = mlflow_runs(home, "cell")
            _, folds = mlflow_runs(home, "fold")
            by_fold = {
                int(f.data.tags["fus2net.fold"]): f.data.metrics["fold/val_auc"] for f in folds
            }
            results[precision] = {
                "fold_val_auc": [by_fold[k] for k in sorted(by_fold)],
                "cv_auc_mean": cells[0].data.metrics["cv/auc_mean"],
                "cv_auc_std": cells[0].data.metrics["cv/auc_std"],
                "test_auc": cells[0].data.metrics["test/auc"],
                "wall_s": round(wall, 1),
            }
    bf16, fp32 = results["bf16-mixed"], results["32-true"]
    diff = np.array(bf16["fold_val_auc"]) - np.array(fp32["fold_val_auc"])
    p_value = float(ttest_rel(bf16["fold_val_auc"], fp32["fold_val_auc"]).pvalue)
    record(
        "precision_auc",
        machine=machine(),
        image_size=args.image_size,
        folds=args.folds,
        epochs=args.epochs,
        bf16=bf16,
        fp32=fp32,
        mean_auc_difference=round(float(diff.mean()), 4),
        fold_difference_std=round(float(diff.std(ddof=1)), 4),
        paired_t_p_value=round(p_value, 3),
        within_noise=bool(abs(diff.mean()) <= max(bf16["cv_auc_std"], fp32["cv_auc_std"])),
    )


def bench_augmentation(args: argparse.Namespace) -> None:
    """Per-image cost of each augmentation preset at 299 px (albumentations on uint8, as the
    loader runs it), against the fast path's per-image training time: batching augmentation on
    tensors pays only where it costs more than 10 % of a step."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from fus2net.cli import config_dir

    torch.set_num_threads(os.cpu_count() or 1)
    size, batch = args.image_size, args.batch_size
    fast_step = make_train_step(size, batch, bf16=True, channels_last=True, compile=True)
    for _ in range(args.warmup):
        fast_step()
    step_rate = float(
        np.median(interleaved_rates({"fast": fast_step}, batch, 3, args.steps)["fast"])
    )
    step_ms = 1000 / step_rate
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, size, size, 3), dtype=np.uint8)
    presets = {}
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        for name in ("paper", "ultrasound"):
            cfg = compose(config_name="train", overrides=[f"augmentation={name}"])
            augment = instantiate(cfg.augmentation)
            for image in images[:8]:
                augment(image=image)
            start = time.perf_counter()
            for _ in range(4):
                for image in images:
                    augment(image=image)
            ms = (time.perf_counter() - start) * 1000 / (4 * len(images))
            presets[name] = {"ms_per_image": round(ms, 3), "share_of_step": round(ms / step_ms, 3)}
    record(
        "augmentation",
        machine=machine(),
        image_size=size,
        fast_step_ms_per_image=round(step_ms, 2),
        presets=presets,
        batch_on_tensors_pays=any(p["share_of_step"] > 0.10 for p in presets.values()),
    )


def bench_backbone(args: argparse.Namespace) -> None:
    """One `model=<preset>` network's training step in each CPU mode (fp32; bf16 autocast with
    and without channels_last; compiled), alternating rounds, medians: which of bf16,
    channels_last and compile win for this backbone on this CPU, and Fus2Net beside it."""
    torch.set_num_threads(os.cpu_count() or 1)
    size, batch = args.image_size, args.batch_size
    options = model_preset(args.model)
    steps = {
        "fp32": make_train_step(
            size, batch, bf16=False, channels_last=False, model_options=options
        ),
        "fp32_channels_last": make_train_step(
            size, batch, bf16=False, channels_last=True, model_options=options
        ),
        "bf16": make_train_step(size, batch, bf16=True, channels_last=False, model_options=options),
        "bf16_channels_last": make_train_step(
            size, batch, bf16=True, channels_last=True, model_options=options
        ),
        "bf16_channels_last_compiled": make_train_step(
            size, batch, bf16=True, channels_last=True, compile=True, model_options=options
        ),
        "fus2net_bf16_channels_last_compiled": make_train_step(
            args.fus2net_size, batch, bf16=True, channels_last=True, compile=True
        ),
    }
    start = time.perf_counter()
    for step in steps.values():  # warm-up; the compiled steps compile here
        for _ in range(args.warmup):
            step()
    warmup_s = time.perf_counter() - start
    rates = interleaved_rates(steps, batch, args.rounds, args.steps)
    median = {name: round(float(np.median(r)), 2) for name, r in rates.items()}
    own = {k: v for k, v in median.items() if not k.startswith("fus2net")}
    best = max(own, key=own.__getitem__)
    record(
        "backbone",
        machine=machine(),
        model=args.model,
        image_size=size,
        fus2net_image_size=args.fus2net_size,
        batch_size=batch,
        images_per_s=median,
        best=best,
        best_vs_fp32=round(own[best] / own["fp32"], 2),
        fus2net_vs_best=round(median["fus2net_bf16_channels_last_compiled"] / own[best], 2),
        warmup_s_incl_compile=round(warmup_s, 1),
        rounds_images_per_s={name: [round(r, 2) for r in rs] for name, rs in rates.items()},
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "what",
        choices=["throughput", "pipeline", "precision-auc", "augmentation", "backbone", "all"],
    )
    parser.add_argument("--model", default="efficientnet_lite0_imagenet", help="backbone: preset")
    parser.add_argument("--fus2net-size", type=int, default=128, help="backbone: Fus2Net's px")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="throughput: steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="throughput: alternating rounds")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--n-images", type=int, default=300)
    args = parser.parse_args()
    if args.what in ("throughput", "all"):
        bench_throughput(argparse.Namespace(**{**vars(args), "image_size": args.image_size or 299}))
    if args.what == "backbone":
        bench_backbone(argparse.Namespace(**{**vars(args), "image_size": args.image_size or 160}))
    if args.what in ("augmentation", "all"):
        bench_augmentation(
            argparse.Namespace(**{**vars(args), "image_size": args.image_size or 299})
        )
    if args.what in ("pipeline", "all"):
        bench_pipeline(
            argparse.Namespace(
                **{**vars(args), "image_size": args.image_size or 299, "epochs": args.epochs or 3}
            )
        )
    if args.what in ("precision-auc", "all"):
        bench_precision_auc(
            argparse.Namespace(
                **{**vars(args), "image_size": args.image_size or 96, "epochs": args.epochs or 10}
            )
        )


if __name__ == "__main__":
    main()

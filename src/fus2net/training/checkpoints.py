"""Checkpoints written whole, and a `last.ckpt` checked before a fold resumes from it.

Lightning saves through fsspec's transaction, a temporary file in the system's temp folder
moved onto the checkpoint path when done: across file systems that move is a copy, which a
full disk or a kill leaves torn at the final path. `SameFolderCheckpointIO` writes beside the
checkpoint and renames instead (`save_whole`).

A `last.ckpt` may also be something else: a plain state dict saved by hand, another model's
checkpoint, a file from an older layout. Lightning would fail on it at every re-run; the fold
starts over from scratch instead, with a warning that says why (`resume_problem`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins import TorchCheckpointIO

from fus2net.io.files import written_whole

log = logging.getLogger(__name__)

# What Lightning reads from a checkpoint to resume a fit (CheckpointConnector.restore_*).
RESUME_KEYS = (
    "state_dict",
    "optimizer_states",
    "lr_schedulers",
    "loops",
    "epoch",
    "global_step",
    "pytorch-lightning_version",
)


class SameFolderCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the checkpoint's folder, then an atomic rename; a full
    disk is raised as DiskFull naming the checkpoint and the bytes it needed."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_whole(checkpoint, Path(path))


def save_whole(obj: Any, path: Path) -> Path:
    """`torch.save(obj, path)`, whole or not at all (checkpoints, model.pt). Serialised in
    memory first, as Lightning does: torch's zip writer hides a full disk's errno behind a
    RuntimeError, a plain write reports it, with the exact bytes needed."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with written_whole(path, buffer.getbuffer().nbytes) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return path


def resume_problem(checkpoint: Path, module: torch.nn.Module | None = None) -> str | None:
    """Why `checkpoint` cannot resume a fit of `module` (None: it can).

    Loaded with weights_only (no pickled code runs): it must be a Lightning checkpoint with
    everything a resume reads, whose weights have `module`'s names and shapes (when given).
    """
    try:
        loaded = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        return f"not a readable checkpoint ({type(exc).__name__}: {exc})"
    if not isinstance(loaded, Mapping):
        return f"holds a {type(loaded).__name__}, not a Lightning checkpoint"
    missing = [key for key in RESUME_KEYS if key not in loaded]
    if missing:
        return f"not a Lightning checkpoint of a fit: no {', '.join(map(repr, missing))}"
    state = loaded["state_dict"]
    if not isinstance(state, Mapping):
        return f"its 'state_dict' is a {type(state).__name__}, not a mapping of tensors"
    if module is None:
        return None
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    found = {name: tuple(getattr(t, "shape", ())) for name, t in state.items()}
    if found.keys() != expected.keys():
        extra, lacking = sorted(found.keys() - expected.keys()), sorted(expected.keys() - found)
        return (
            f"weights of another model: {len(lacking)} of this model's tensors missing "
            f"(e.g. {lacking[:2]}), {len(extra)} unknown (e.g. {extra[:2]})"
        )
    shapes = [f"{n} {found[n]} != {expected[n]}" for n in expected if found[n] != expected[n]]
    if shapes:
        return f"weights of another shape: {'; '.join(shapes[:3])}"
    return None


def resumable(checkpoint: Path, module: torch.nn.Module | None = None) -> bool:
    """Whether a fold can resume from `checkpoint`; a file that cannot is reported (so the
    fold starts over instead of failing every re-run until someone deletes it)."""
    if not checkpoint.is_file():
        return False
    problem = resume_problem(checkpoint, module)
    if problem is not None:
        log.warning(
            "cannot resume from %s: %s; training this fold from scratch", checkpoint, problem
        )
        return False
    return True


def rename_monitors(checkpoint: dict[str, Any], renamed: Mapping[str, str]) -> None:
    """Give the state of each callback that monitored a metric since renamed (`renamed`: old ->
    new name) the key Lightning looks it up by now, in place. Lightning keys a ModelCheckpoint's
    state by its monitor's name: a last.ckpt written before the rename would otherwise resume
    without its best score (a worse epoch could then overwrite best.ckpt), with a warning."""
    states = checkpoint.get("callbacks")
    if not isinstance(states, dict):
        return
    for key in [k for k in states if isinstance(k, str)]:
        for old, new in renamed.items():
            was, now = f"'monitor': {old!r}", f"'monitor': {new!r}"
            if was in key:
                state = states.pop(key)
                if isinstance(state, dict) and state.get("monitor") == old:
                    state["monitor"] = new
                states.setdefault(key.replace(was, now), state)
                break

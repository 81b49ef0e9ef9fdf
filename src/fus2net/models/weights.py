"""Reading a weights file without running code from it, and saying plainly what is wrong.

`torch.load(..., weights_only=True)` refuses pickled code, but its errors are tracebacks that
suggest `weights_only=False`, which would run that code; here each failure is one
`WeightsFileError` naming the file and what to do instead.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

SAVE_HINT = "torch.save(model.state_dict(), path)"


class WeightsFileError(ValueError):
    """A weights file that is empty, truncated, not PyTorch's, or holds more than tensors."""


def _reason(err: BaseException) -> str:
    """The part of torch's message that says what is wrong, without its advice."""
    parts = [p.strip() for p in re.split(r"\n\s*\n", str(err)) if p.strip()]
    kept = [p for p in parts if "weights_only" not in p and not p.startswith("Check the")]
    text = kept[0].splitlines()[0] if kept else type(err).__name__
    return text.split(". ")[0].rstrip(".")


def load_weights(path: str | Path) -> Any:
    """What `path` holds, loaded with weights_only=True on the CPU (no pickled code runs)."""
    file = Path(path)
    try:
        size = file.stat().st_size
    except OSError as err:
        raise WeightsFileError(f"{file}: cannot be read ({err.strerror})") from None
    if size == 0:
        raise WeightsFileError(
            f"{file}: the weights file is empty (an interrupted copy or download?); copy it "
            "again or retrain"
        )
    try:
        with warnings.catch_warnings():  # a plain pickle's protocol, before it is refused
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        code = re.search(r"GLOBAL ([\w.]+)", str(err))
        if code:
            raise WeightsFileError(
                f"{file}: refused, it is not a weights file: it holds Python code "
                f"({code.group(1)}) that loading it would run. fus2net writes only tensors "
                f"({SAVE_HINT}); do not load this file at all unless you know where it came from"
            ) from None
        raise WeightsFileError(
            f"{file}: not a PyTorch weights file, or a truncated one ({_reason(err)}); copy it "
            f"again, or save one with {SAVE_HINT}"
        ) from None
    except Exception as err:  # the zip reader's RuntimeError, EOFError, ...
        raise WeightsFileError(
            f"{file}: truncated or corrupt, not a readable PyTorch weights file "
            f"({_reason(err)}); copy it again, or save one with {SAVE_HINT}"
        ) from None

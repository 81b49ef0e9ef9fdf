"""The warnings a library raises while one file is decoded, kept apart per thread.

`warnings.catch_warnings` swaps process-wide state (the filters and `showwarning`), so entering
it in each decoding thread would hand one file's warnings to another file's capture, lose some,
or, on exit, restore the state under a thread still decoding. Here the first open capture enters
one `catch_warnings` for the whole process, with a `showwarning` that gives each warning to the
capture open in the thread that raised it; the last capture to close leaves it. Warnings of
threads without a capture go where they went before (shown with the "always" action meanwhile).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_local = threading.local()
_state: dict[str, Any] = {"open": 0, "context": None, "previous": None}


def _show(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """`warnings.showwarning` while any capture is open: to this thread's innermost capture."""
    stack: list[list[warnings.WarningMessage]] = getattr(_local, "stack", [])
    if stack:
        stack[-1].append(warnings.WarningMessage(message, category, filename, lineno, file, line))
    elif _state["previous"] is not None:
        _state["previous"](message, category, filename, lineno, file, line)


@contextmanager
def captured_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning raised in this thread inside the block (each one, not once per place)."""
    caught: list[warnings.WarningMessage] = []
    if not hasattr(_local, "stack"):
        _local.stack = []
    with _lock:
        if _state["open"] == 0:
            context = warnings.catch_warnings()
            context.__enter__()
            _state["context"], _state["previous"] = context, warnings.showwarning
            warnings.simplefilter("always")
            warnings.showwarning = _show
        _state["open"] += 1
    _local.stack.append(caught)
    try:
        yield caught
    finally:
        _local.stack.pop()
        with _lock:
            _state["open"] -= 1
            if _state["open"] == 0:
                context, _state["context"], _state["previous"] = _state["context"], None, None
                context.__exit__(None, None, None)

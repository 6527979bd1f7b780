"""Files in a batch job's folder: write one, read the end of one (blocking; run in a thread)."""

from __future__ import annotations

from collections import deque
from pathlib import Path


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, making its folder first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of ``path`` ("" when it does not exist yet)."""
    if not path.exists():
        return ""
    with path.open(errors="replace") as handle:
        return "".join(deque(handle, maxlen=lines))

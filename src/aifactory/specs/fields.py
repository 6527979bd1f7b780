"""What every spec shares: the frozen model, names, durations and paths checked."""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"


MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$"


ARG_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


_CLOCK = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")


BackendName = Literal["local", "slurm", "kubernetes"]


# Longer than any walltime, idle time or key lifetime, and still a valid timedelta.
MAX_DURATION_S = 100 * 365 * 86400


# Linux's PATH_MAX and NAME_MAX: longer paths fail in the kernel (ENAMETOOLONG).
MAX_PATH_BYTES = 4095


MAX_PATH_PART_BYTES = 255


class SpecModel(BaseModel):
    """The base of every spec: frozen, unknown fields refused, no NaN or infinity."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def parse_duration_s(text: str | int | float) -> float:
    """Parse ``90``, ``"90s"``, ``"30m"``, ``"2h30m"``, ``"1d"`` or ``"HH:MM:SS"`` to seconds.

    Raises:
        ValueError: when the text is none of those forms, or longer than 100 years.
    """
    seconds = duration_seconds(text)
    if math.isnan(seconds) or seconds > MAX_DURATION_S:
        raise ValueError(f"{text!r} is longer than 100 years ({MAX_DURATION_S} s)")
    return seconds


def duration_seconds(text: str | int | float) -> float:
    """Seconds in a duration of any form ``parse_duration_s`` takes, without its bound."""
    if isinstance(text, int | float):
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"a duration is a number of seconds or text like '30m', not {text!r}")
    value = text.strip()
    if value.isdigit():
        return float(value)
    clock = _CLOCK.match(value)
    if clock:
        days, hours, minutes, seconds = (int(g or 0) for g in clock.groups())
        return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    match = _DURATION.match(value)
    if value and match:
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    raise ValueError(f"{text!r} is not a duration; use e.g. '90s', '30m', '2h', '1d' or '01:30:00'")


def check_path(path: str) -> str:
    """``path`` itself, once the kernel would take it (no control characters, not too long)."""
    if any(ord(c) < 32 or c == "\x7f" for c in path):
        raise ValueError("a path may not contain control characters")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise ValueError(f"a path may be at most {MAX_PATH_BYTES} bytes long")
    if any(len(part.encode()) > MAX_PATH_PART_BYTES for part in path.split("/")):
        raise ValueError(f"each part of a path may be at most {MAX_PATH_PART_BYTES} bytes long")
    return path


def check_env_names(env: dict[str, str]) -> dict[str, str]:
    """``env`` itself, once each name is a valid environment variable name."""
    for name in env:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise ValueError(f"environment variable name {name!r} is not valid")
    return env


def check_rotation_lead(time_limit_s: float | None, rotation_lead_s: float) -> None:
    """Refuse a rotation lead that is not shorter than the time limit."""
    if time_limit_s is not None and rotation_lead_s >= time_limit_s:
        raise ValueError(
            f"rotation_lead ({rotation_lead_s:.0f}s) must be shorter than "
            f"time_limit ({time_limit_s:.0f}s)"
        )

"""Whether the modules compiled with mypyc (``setup.py``) are as new as their sources.

Python imports a compiled module in place of its ``.py``: after an edit, the
old build would go on running until the next ``scripts/setup.sh``.
"""

from __future__ import annotations

from pathlib import Path

from aifactory.errors import ConfigError

_PACKAGE = Path(__file__).parent


def stale_builds(package: Path = _PACKAGE) -> list[str]:
    """The sources (relative to the package) edited since their compiled module was built."""
    stale = []
    for built in package.rglob("*.cpython-*.so"):
        source = built.with_name(built.name.split(".", 1)[0] + ".py")
        if source.exists() and source.stat().st_mtime > built.stat().st_mtime:
            stale.append(str(source.relative_to(package)))
    return sorted(stale)


def check_builds() -> None:
    """Refuse to run a compiled module older than its source.

    Raises:
        ConfigError: naming the sources and the command that rebuilds them.
    """
    stale = stale_builds()
    if stale:
        raise ConfigError(
            f"{', '.join(stale)} changed after it was compiled: the old build would run.",
            fix="run scripts/setup.sh to compile it again "
            "(AIFACTORY_COMPILE=0 keeps it plain Python)",
        )

"""Which of the systems the control plane depends on it cannot ask now, since when, and why.

A stack (Slurm, the Kubernetes API server) or the database is *unreachable*
from its first failed question until it answers again. "Could not ask" is
never "gone": while a stack is unreachable its replicas are kept as they
were, and nothing is started, replaced or forgotten on it (see
``stack_watch``). ``aif status``, the dashboard, ``/healthz`` and the
``aifactory_dependency_up`` metric all read this one record.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from aifactory import metrics

logger = logging.getLogger(__name__)

_LABELS = {
    "slurm": "Slurm",
    "kubernetes": "the Kubernetes API server",
    "postgresql": "PostgreSQL",
    "sqlite": "the SQLite database",
}


def label(dependency: str) -> str:
    """The dependency's name in sentences (``Slurm``, ``the Kubernetes API server``)."""
    return _LABELS.get(dependency, dependency)


@dataclass(frozen=True)
class Outage:
    """One dependency that does not answer.

    Attributes:
        dependency: ``slurm``, ``kubernetes``, ``postgresql``…
        since: Unix time of the first failed question of this outage.
        error: What the last failed question got.
        failures: Failed questions in a row.
    """

    dependency: str
    since: float
    error: str
    failures: int = 1

    @property
    def message(self) -> str:
        """``Slurm unreachable since 2026-12-07 12:03:04: <the last error>``."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        name = label(self.dependency)
        return f"{name[:1].upper()}{name[1:]} unreachable since {when}: {self.error}"

    def to_dict(self) -> dict[str, object]:
        """The outage as plain JSON values."""
        return {
            "dependency": self.dependency,
            "since": self.since,
            "error": self.error,
            "failures": self.failures,
            "message": self.message,
        }


class Outages:
    """The dependencies that do not answer now (the rest answered their last question)."""

    def __init__(self) -> None:
        self._now: dict[str, Outage] = {}
        self._known: set[str] = set()

    def watch(self, dependency: str) -> None:
        """Report ``dependency`` in the metric from now on (as up until a question fails)."""
        if dependency not in self._known:
            self._known.add(dependency)
            metrics.set_dependency(dependency, None)

    def failed(self, dependency: str, error: str, asked_at: float | None = None) -> None:
        """A question to ``dependency`` (asked at Unix time ``asked_at``, else now) got no answer.

        ``error`` says what it got instead.
        """
        self.watch(dependency)
        before = self._now.get(dependency)
        if before is None:
            outage = Outage(dependency, asked_at or time.time(), error)
            logger.warning("%s unreachable: %s", label(dependency), error)
            metrics.set_dependency(dependency, outage.since)
        else:
            outage = Outage(dependency, before.since, error, before.failures + 1)
        self._now[dependency] = outage

    def answered(self, dependency: str) -> None:
        """``dependency`` answered a question: whatever outage it had is over."""
        self.watch(dependency)
        outage = self._now.pop(dependency, None)
        if outage is not None:
            logger.info(
                "%s answers again after %.0f s unreachable",
                label(dependency),
                time.time() - outage.since,
            )
            metrics.set_dependency(dependency, None)

    def of(self, dependency: str) -> Outage | None:
        """The outage of ``dependency`` under way, if any."""
        return self._now.get(dependency)

    def current(self) -> list[Outage]:
        """Every outage under way, the oldest first."""
        return sorted(self._now.values(), key=lambda outage: outage.since)

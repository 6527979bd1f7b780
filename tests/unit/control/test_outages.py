"""The record of unreachable dependencies: since when, why, and the metric that says so."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from aifactory import metrics
from aifactory.config import Settings
from aifactory.control import ControlPlane
from aifactory.control.outages import Outages
from aifactory.store import Store


def _up(dependency: str) -> float:
    return float(metrics.DEPENDENCY_UP.labels(dependency)._value.get())


def _since(dependency: str) -> float:
    return float(metrics.DEPENDENCY_UNREACHABLE_SINCE.labels(dependency)._value.get())


def test_an_outage_lasts_from_its_first_unanswered_question_to_the_next_answer() -> None:
    outages = Outages()
    outages.watch("slurm")
    assert outages.of("slurm") is None and _up("slurm") == 1 and _since("slurm") == 0
    outages.failed("slurm", "Slurm did not answer `squeue`", asked_at=1000.0)
    outages.failed("slurm", "Slurm did not answer `sbatch`", asked_at=1010.0)
    outage = outages.of("slurm")
    assert outage is not None
    assert (outage.since, outage.failures) == (1000.0, 2), "since the first; the error is the last"
    assert outage.message.startswith("Slurm unreachable since ")
    assert outage.message.endswith(": Slurm did not answer `sbatch`")
    assert _up("slurm") == 0 and _since("slurm") == 1000.0
    assert [o.dependency for o in outages.current()] == ["slurm"]
    outages.answered("slurm")
    assert outages.of("slurm") is None and outages.current() == []
    assert _up("slurm") == 1 and _since("slurm") == 0


def test_each_dependency_is_named_in_words_and_listed_oldest_first() -> None:
    outages = Outages()
    outages.failed("postgresql", "connection refused", asked_at=2000.0)
    outages.failed("kubernetes", "no list of pods within 10 s", asked_at=1000.0)
    first, second = outages.current()
    assert first.message.startswith("The Kubernetes API server unreachable since ")
    assert second.to_dict()["message"] == second.message
    assert second.message.startswith("PostgreSQL unreachable since ")


def test_a_postgresql_that_does_not_answer_is_an_outage_and_the_tick_goes_on(
    tmp_path: Path,
) -> None:
    with socket.socket() as probe:  # a port where nothing listens: psycopg is refused
        probe.bind(("127.0.0.1", 0))
        url = f"postgresql+psycopg://aif:aif@127.0.0.1:{probe.getsockname()[1]}/aif"
    settings = Settings(data_dir=tmp_path, database_url=url)
    store = Store(url)
    plane = ControlPlane(settings, store)
    asked = time.time()
    asyncio.run(plane.reconciler.tick())
    outage = plane.reconciler.outages.of("postgresql")
    assert outage is not None and outage.since >= asked
    assert outage.message.startswith("PostgreSQL unreachable since ")
    assert "refused" in outage.error.lower()
    health = plane.health()
    assert health["status"] == "degraded"
    assert [o["dependency"] for o in health["unreachable"]] == ["postgresql"]
    assert _up("postgresql") == 0
    store.close()

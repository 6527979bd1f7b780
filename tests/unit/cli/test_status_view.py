"""`aif status` shows where burst replicas went and what each stack estimated."""

from __future__ import annotations

from rich.console import Console

from aifactory.cli.status_view import render_status


def test_burst_decisions_are_shown_with_each_stacks_estimate() -> None:
    status = {
        "name": "chat",
        "backend": "slurm+kubernetes",
        "replicas": {"min": 1, "max": 3, "wanted": 2, "ready": 1, "by_state": {"ready": 1}},
        "in_flight": 2,
        "runs_as": ["aif-alice"],
        "isolation": "root",
        "queue": {"length": 0, "limit": 64, "oldest_wait_s": 0},
        "waiting_on": "",
        "starting": [],
        "scaling": [{"at": 0.0, "from": 1, "to": 2, "reason": "load 2 > 1 per replica x 1"}],
        "bursts": [
            {
                "at": 0.0,
                "stack": "kubernetes",
                "start_estimates_s": {"slurm": 1799.4, "kubernetes": 0},
            },
            {
                "at": 1.0,
                "stack": "slurm",
                "start_estimates_s": {"slurm": 1795.0, "kubernetes": None},
            },
            {
                "at": 2.0,
                "stack": "kubernetes",
                "start_estimates_s": {"kubernetes": 0},
                "moved_from": "slurm",
            },
        ],
    }
    console = Console(width=160, record=True)
    console.print(render_status(status))
    text = console.export_text()
    assert "recent burst replicas" in text
    assert "slurm 1799 s, kubernetes 0 s" in text
    assert "slurm 1795 s, kubernetes cannot tell" in text
    assert "kubernetes (moved from slurm)" in text
    assert "runs as aif-alice" in text
    assert "SINGLE-USER" not in text


def test_the_insecure_single_user_mode_is_shown_loudly() -> None:
    status = {
        "name": "chat",
        "backend": "local",
        "replicas": {"min": 1, "max": 1, "wanted": 1, "ready": 1, "by_state": {"ready": 1}},
        "in_flight": 0,
        "runs_as": [],
        "isolation": "single-user",
        "queue": {"length": 0, "limit": 64, "oldest_wait_s": 0},
        "waiting_on": "",
        "starting": [],
        "scaling": [],
    }
    console = Console(width=200, record=True)
    console.print(render_status(status))
    assert "INSECURE SINGLE-USER MODE" in console.export_text()


def test_an_api_served_in_clear_on_the_network_is_shown_loudly() -> None:
    status = {
        "name": "chat",
        "backend": "local",
        "replicas": {"min": 1, "max": 1, "wanted": 1, "ready": 1, "by_state": {"ready": 1}},
        "in_flight": 0,
        "runs_as": [],
        "isolation": "root",
        "plaintext_warning": "UNENCRYPTED API: it listens on 0.0.0.0:8000 over plain HTTP",
        "queue": {"length": 0, "limit": 64, "oldest_wait_s": 0},
        "waiting_on": "",
        "starting": [],
        "scaling": [],
    }
    console = Console(width=200, record=True)
    console.print(render_status(status))
    assert "UNENCRYPTED API: it listens on 0.0.0.0:8000" in console.export_text()


def _paused(unreachable: list[str], paused: str) -> str:
    status = {
        "name": "chat",
        "backend": "slurm",
        "replicas": {"min": 2, "max": 2, "wanted": 2, "ready": 2, "by_state": {"ready": 2}},
        "in_flight": 0,
        "runs_as": [],
        "isolation": "root",
        "queue": {"length": 0, "limit": 64, "oldest_wait_s": 0},
        "waiting_on": f"scaling paused: {paused}",
        "starting": [],
        "scaling": [],
        "unreachable": unreachable,
        "scaling_paused": paused,
    }
    console = Console(width=200, record=True)
    console.print(render_status(status))
    return console.export_text()


def test_an_unreachable_stack_and_the_paused_scaling_are_said_once() -> None:
    outage = "Slurm unreachable since 2026-12-07 12:00:00: Slurm did not answer `squeue`"
    text = _paused([outage], outage)
    assert text.count("Slurm unreachable since 2026-12-07 12:00:00") == 1
    assert "scaling paused until it answers: nothing is started or replaced there" in text
    waiting = "waiting for Slurm to list the replicas of the earlier run"
    assert f"scaling paused: {waiting}" in _paused([], waiting)


def test_another_tenants_shared_service_shows_its_name_and_models() -> None:
    console = Console(width=100, record=True)
    console.print(render_status({"name": "chat", "kind": "Service", "models": ["smol"]}))
    assert console.export_text().strip() == "chat  shared: smol"

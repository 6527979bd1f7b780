"""Metric names: what the README and the Grafana dashboard use must exist, with units."""

import json
import re
from pathlib import Path

from aifactory import metrics

REPO = Path(__file__).parents[2]
_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def families() -> set[str]:
    return {family.name for family in metrics.REGISTRY.collect()}


def base(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in families():
            return name.removesuffix(suffix)
    return name


def test_the_grafana_dashboard_uses_only_real_metrics() -> None:
    text = json.dumps(json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text()))
    used = set(re.findall(r"aifactory_[a-z_]+", text))
    assert used and {base(n) for n in used} <= families()


def test_the_readme_lists_every_metric() -> None:
    readme = (REPO / "README.md").read_text()
    for name in families():
        assert f"`{name}" in readme, name


def test_durations_are_in_seconds_and_counters_count() -> None:
    for family in metrics.REGISTRY.collect():
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        assert "latency" not in family.name and "length" not in family.name


def test_pool_gauges_are_read_at_scrape_time() -> None:
    metrics.watch_function_pools(
        lambda: {"p": {"workers": 2, "capacity": 8, "queued": 3, "running": 1}}
    )
    try:
        text = metrics.render().decode()
    finally:
        metrics.watch_function_pools(None)
    assert 'aifactory_function_workers{pool="p"} 2.0' in text
    assert 'aifactory_function_tasks{pool="p",state="queued"} 3.0' in text
    assert "aifactory_function_workers{" not in metrics.render().decode()

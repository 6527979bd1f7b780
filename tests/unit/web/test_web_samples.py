from aifactory import metrics
from aifactory.web import MetricsSampler


def test_samples_count_what_happened_since_the_previous_one() -> None:
    sampler = MetricsSampler(interval_s=10)
    series = metrics.request_series("sampled-model", "chat")
    series.answered(200).inc(3)
    series.answered(503).inc()
    series.completion_tokens.inc(40)
    metrics.set_replica_counts({("svc", "ready", "slurm"): 2, ("svc", "submitted", "slurm"): 1})
    first = sampler.take(now=sampler._last_at + 10)
    assert (first.requests, first.errors, first.tokens) == (4, 1, 40)
    assert (first.ready, first.starting) == (2, 1)
    assert first.span_s == 10
    second = sampler.take(now=first.at + 10)
    assert (second.requests, second.errors, second.tokens) == (0, 0, 0)
    assert [s["requests"] for s in sampler.samples()][:2] == [4, 0]


def test_the_ring_keeps_one_hour() -> None:
    sampler = MetricsSampler(interval_s=600)
    for step in range(10):
        sampler.take(now=1000.0 + step)
    assert len(sampler.samples()) in (6, 7)  # six full samples, maybe the one in progress


def test_snapshot_totals_by_model() -> None:
    metrics.request_series("snap-model", "embeddings").answered(200).inc(2)
    totals = metrics.snapshot().by_model["snap-model"]
    assert totals.requests == 2 and totals.errors == 0


def test_a_tenants_samples_add_up_its_own_names_only() -> None:
    sampler = MetricsSampler(interval_s=10)
    metrics.request_series("mine-model", "chat").answered(200).inc(5)
    metrics.request_series("theirs-model", "chat").answered(200).inc(7)
    metrics.set_replica_counts({("mine", "ready", "local"): 1, ("theirs", "ready", "local"): 3})
    sampler.take(now=sampler._last_at + 10)
    mine = sampler.samples({"mine", "mine-model"})[0]
    assert (mine["requests"], mine["ready"]) == (5, 1)
    everything = sampler.samples()[0]
    assert everything["requests"] >= 12 and everything["ready"] >= 4
    assert sampler.samples({"nothing-of-mine"})[0]["requests"] == 0

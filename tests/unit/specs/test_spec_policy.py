"""The site's spec policy: forbidden fields and allowed partitions, QOS and images."""

from __future__ import annotations

import pytest

from aifactory.errors import SpecError
from aifactory.specs import SpecPolicy, load_deployable, load_job

POLICY = SpecPolicy(
    forbidden=("slurm.lend", "env", "time_limit"),
    partitions=("batch",),
    qos=("normal",),
    images=("registry.site/",),
)
K8S = "name: j\ncommand: [ls]\nbackend: kubernetes\nkubernetes: {image: %s}\n"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("name: j\ncommand: [ls]\nslurm: {lend: true}\n", "slurm.lend"),
        ("name: j\ncommand: [ls]\nenv: {A: b}\n", "env"),
        ("name: j\ncommand: [ls]\ntime_limit: 1h\n", "time_limit"),  # an alias
        ("name: j\ncommand: [ls]\nslurm: {partition: urgent}\n", "slurm.partition"),
        ("name: j\ncommand: [ls]\nslurm: {qos: high}\n", "slurm.qos"),
        (K8S % "evil.io/x", "kubernetes.image"),
    ],
)
def test_a_field_the_site_restricts_is_refused_by_name(spec: str, field: str) -> None:
    with pytest.raises(SpecError) as refused:
        POLICY.check(load_job(spec))
    assert refused.value.message.startswith(f"{field}:")


def test_defaults_and_allowed_values_pass() -> None:
    allowed = "name: j\ncommand: [ls]\nslurm: {partition: batch, qos: normal, lend: false}\n"
    POLICY.check(load_job(allowed))
    POLICY.check(load_job(K8S % "registry.site/a:1"))
    POLICY.check(load_deployable("kind: FunctionPool\nname: p\n"))  # no such fields at all
    SpecPolicy().check(load_job("name: j\ncommand: [ls]\nenv: {A: b}\n"))  # no policy: anything

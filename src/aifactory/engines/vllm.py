"""Recipe: vLLM's OpenAI-compatible server on GPU nodes.

vLLM is a CUDA build, so it is rendered and unit-tested here and run only
where GPUs are. ``engine.args`` become ``--name value`` flags (``true`` becomes
a bare flag, ``false`` is dropped).
"""

from __future__ import annotations

from aifactory.engines.base import HOST, PORT, EngineLaunch
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

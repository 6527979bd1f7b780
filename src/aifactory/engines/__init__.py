"""How to launch an engine: llama.cpp (CPU), vLLM (GPU), any OpenAI-compatible server."""

from pathlib import Path

from aifactory.engines import llamacpp, openai_compatible, vllm
from aifactory.engines._process import die_with_parent
from aifactory.engines.base import EngineLaunch, fill_address
from aifactory.engines.model_source import locate
from aifactory.specs import Service

__all__ = ["EngineLaunch", "die_with_parent", "fill_address", "locate", "render_engine"]


def render_engine(service: Service, cache_dir: Path) -> EngineLaunch:
    """The engine launch recipe for a service's engine type.

    Raises:
        EngineError: when the spec asks for something the engine cannot do.
    """
    if service.engine.type == "llama.cpp":
        return llamacpp.render(service, cache_dir)
    if service.engine.type == "vllm":
        return vllm.render(service)
    return openai_compatible.render(service)

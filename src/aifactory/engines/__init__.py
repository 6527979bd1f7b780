"""How to launch an engine: llama.cpp (CPU), vLLM (GPU), any OpenAI-compatible server.

This package is imported on compute nodes by the launcher and the engine
runner, so importing it stays cheap: the recipes (which need the specs and
pydantic) load only when ``render_engine`` is called.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from aifactory.engines._process import die_with_parent
from aifactory.engines.base import EngineLaunch, fill_address
from aifactory.engines.model_source import locate

if TYPE_CHECKING:
    from aifactory.specs import Service

__all__ = [
    "EngineLaunch",
    "context_tokens",
    "die_with_parent",
    "endpoints",
    "fill_address",
    "locate",
    "render_engine",
    "stops_only_streams",
    "takes_text_only",
]


def render_engine(
    service: Service, cache_dir: Path | None, python: str = sys.executable
) -> EngineLaunch:
    """The engine launch recipe for a service's engine type.

    ``python`` is the interpreter on the replica's node (llama.cpp runs under
    it); ``cache_dir`` is where converted models go there (None: the engine's
    default, under ``$HOME``).

    Raises:
        EngineError: when the spec asks for something the engine cannot do.
    """
    from aifactory.engines import llamacpp, openai_compatible, vllm

    if service.engine.type == "llama.cpp":
        return llamacpp.render(service, cache_dir, python)
    if service.engine.type == "vllm":
        return vllm.render(service)
    return openai_compatible.render(service)


def context_tokens(service: Service) -> int | None:
    """How many tokens the service's engine holds in its context; None when not known."""
    from aifactory.engines import llamacpp, vllm

    if service.engine.type == "llama.cpp":
        return llamacpp.context_tokens(service)
    if service.engine.type == "vllm":
        return vllm.context_tokens(service)
    return None


def endpoints(service: Service) -> frozenset[str] | None:
    """The OpenAI endpoints (``chat``, ``completions``, ``embeddings``) the engine serves.

    None when the engine does not say. llama.cpp serves embeddings only when
    started with ``embedding`` (and then cannot generate), text otherwise.
    """
    from aifactory.engines import llamacpp

    if service.engine.type == "llama.cpp":
        return llamacpp.endpoints(service)
    return None


def takes_text_only(service: Service) -> bool:
    """Whether the engine takes text only: llama.cpp here has no vision or audio projector."""
    return service.engine.type == "llama.cpp"


def stops_only_streams(service: Service) -> bool:
    """Whether the engine stops generating for a client gone only while streaming to it.

    llama.cpp notices a closed connection when a write fails, so a non-streamed
    request went on to its last token after its client left (its issue #9273).
    """
    return service.engine.type == "llama.cpp"

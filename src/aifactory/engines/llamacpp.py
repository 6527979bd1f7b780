"""Recipe: llama.cpp's C++ server on CPU, through our ``llamacpp_server`` runner."""

from __future__ import annotations

import sys
from pathlib import Path

from aifactory.engines.base import HOST, PORT, EngineLaunch, int_arg
from aifactory.engines.llamacpp_server import DEFAULT_CTX_SIZE, DEFAULT_PARALLEL
from aifactory.errors import EngineError
from aifactory.specs import Service

# spec `engine.args` name -> runner flag; booleans become bare flags.
ARGS = {
    "ctx_size": "--ctx-size",
    "parallel": "--parallel",
    "batch_size": "--batch-size",
    "ubatch_size": "--ubatch-size",
    "embedding": "--embedding",
    "pooling": "--pooling",
    "chat_template": "--chat-template",
    "jinja": "--jinja",
    "tool_calls": "--tool-calls",
}
# Flags that take a --no- form: false is said, not left out (they default to on).
NEGATABLE = frozenset({"--jinja", "--tool-calls"})


def render(service: Service, cache_dir: Path | None, python: str = sys.executable) -> EngineLaunch:
    """The argv that starts llama.cpp for ``service``.

    Without ``cache_dir`` the runner converts models under its own ``$HOME``.

    Raises:
        EngineError: for an argument llama.cpp does not take.
    """
    engine = service.engine
    argv = [python, "-m", "aifactory.engines.llamacpp_server", "--model", engine.model]
    for name in service.served_names():
        argv += ["--alias", name]
    argv += ["--host", HOST, "--port", PORT, "--threads", str(service.resources.cpus)]
    if cache_dir is not None:
        argv += ["--cache-dir", str(cache_dir)]
    for name, value in engine.args.items():
        flag = ARGS.get(name.replace("-", "_"))
        if flag is None:
            raise EngineError(
                f"engine argument {name!r} is not known to llama.cpp.",
                fix=f"use one of: {', '.join(sorted(ARGS))}",
            )
        if isinstance(value, bool):
            if flag in NEGATABLE:
                argv.append(flag if value else "--no-" + flag.removeprefix("--"))
            elif value:
                argv.append(flag)
        else:
            argv += [flag, str(value)]
    return EngineLaunch(tuple(argv), env=dict(engine.env), threads=service.resources.cpus)


def context_tokens(service: Service) -> int | None:
    """The tokens one request may fill: a slot's share of the context; None: the model's own.

    llama.cpp splits ``ctx_size`` evenly among its ``parallel`` slots, and a request
    longer than its slot is refused.
    """
    ctx_size = int_arg(service.engine.args, "ctx_size")
    if ctx_size is None:
        ctx_size = DEFAULT_CTX_SIZE
    slots = int_arg(service.engine.args, "parallel") or DEFAULT_PARALLEL
    return ctx_size // slots or None  # 0: the context the model was trained with


def endpoints(service: Service) -> frozenset[str]:
    """Embeddings with ``embedding`` set (llama.cpp then computes no logits), else text."""
    value = service.engine.args.get("embedding")
    embeds = value is True or (isinstance(value, str) and value.lower() in ("1", "true", "yes"))
    return frozenset({"embeddings"}) if embeds else frozenset({"chat", "completions"})

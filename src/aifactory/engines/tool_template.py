"""Give a ChatML model whose own chat template ignores ``tools`` a template that offers them.

llama.cpp (jinja on) drops ``tools`` when a model's template never renders them, so the
request runs as plain chat and ends by ``length``. For ChatML models (SmolLM2, the packaged
model, among them) the model's own template is kept for requests without tools, byte for
byte, and requests with tools are rendered by ``chat_templates/chatml_tools.jinja``: tools
listed in the system turn and calls in ``<tool_call>`` JSON, a format llama.cpp recognises,
turns into a grammar and parses back into OpenAI ``tool_calls``.
"""

from __future__ import annotations

from importlib import resources

CHATML_TURN = "<|im_start|>"


def tool_calling_template(own: str | None) -> str | None:
    """A template offering tools around ``own``; None if ``own`` takes tools or is not ChatML."""
    if not own or CHATML_TURN not in own or "tools" in own:
        return None
    tools_branch = (
        resources.files("aifactory.engines")
        .joinpath("chat_templates/chatml_tools.jinja")
        .read_text(encoding="utf-8")
    )
    return "{%- if tools %}" + tools_branch + "{%- else %}" + own + "{%- endif %}"

"""Recipe: any OpenAI-compatible server, given as an argv template in the spec.

``{host}`` and ``{port}`` are filled in by the launcher on the node; ``{model}``
is filled here with the spec's ``model``. Each template item stays one argv
item: nothing is ever parsed by a shell.
"""

from __future__ import annotations

from aifactory.engines.base import EngineLaunch
from aifactory.specs import Service


def render(service: Service) -> EngineLaunch:
    """The argv from the spec's ``command`` template."""
    engine = service.engine
    argv = tuple(part.replace("{model}", engine.model) for part in engine.command)
    return EngineLaunch(argv, env=dict(engine.env), threads=service.resources.cpus)

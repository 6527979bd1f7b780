"""The official DCAT-AP 3.0.1 SHACL shapes (tests/data/dcat-ap-3.0.1), and a check against them."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pyshacl
from rdflib import Graph

_SHAPES = Path(__file__).parent / "data" / "dcat-ap-3.0.1"


@cache
def shapes() -> Graph:
    """The shapes and their range constraints, parsed once."""
    graph = Graph()
    for name in ("shapes.ttl", "range.ttl"):
        graph.parse(_SHAPES / name, format="turtle")
    return graph


def conforms(graph: Graph) -> tuple[bool, str]:
    """Whether ``graph`` conforms to DCAT-AP 3.0.1, and pyshacl's report."""
    ok, _report, text = pyshacl.validate(graph, shacl_graph=shapes())
    return bool(ok), str(text)

"""DCAT-AP output: rdflib reads it back, and it conforms to the shapes shipped with it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyshacl
from rdflib import Graph, Namespace, URIRef
from rdflib.namespace import DCTERMS, RDF

import aifactory.catalog
from aifactory.catalog import CatalogView, catalog_graph, entry_graph, jsonld
from aifactory.store.catalog import CatalogEntryRecord, CatalogVersionRecord

SHAPES = Path(aifactory.catalog.__file__).parent / "shapes" / "dcat-ap-minimal.ttl"
BASE = "http://factory.example"
DCAT = Namespace("http://www.w3.org/ns/dcat#")


def _view(name: str = "wiki", license: str = "CC-BY-4.0", version: int = 2) -> CatalogView:
    entry = CatalogEntryRecord(
        id=1,
        tenant="physics",
        tenant_id=1,
        name=name,
        kind="dataset",
        bucket="data",
        prefix="wiki",
        visibility="public",
        shared_with=(),
        latest=version,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    words = {
        "title": "Wiki sentences",
        "description": "One sentence a line",
        "license": license,
        "keywords": ["nlp", "text"],
        "creator": "Physics lab",
        "format": "jsonl",
        "metadata": {},
    }
    files = [
        {"path": "a/part-0.jsonl", "size": 12, "sha256": "ab" * 32, "kept": True},
        {"path": "part 1.jsonl", "size": 0, "sha256": "cd" * 32, "kept": True},
    ]
    return CatalogView(
        entry, CatalogVersionRecord(version, words, files, datetime(2026, 1, 2, tzinfo=UTC))
    )


def _conforms(graph: Graph) -> tuple[bool, str]:
    conforms, _report, text = pyshacl.validate(
        graph, shacl_graph=Graph().parse(SHAPES, format="turtle")
    )
    return bool(conforms), str(text)


def test_an_entry_reads_back_from_json_ld_and_conforms() -> None:
    document = jsonld(entry_graph(_view(), BASE))
    assert "@context" in json.loads(document)
    graph = Graph().parse(data=document, format="json-ld")
    dataset = URIRef(f"{BASE}/api/catalog/physics/wiki/versions/2")
    assert (dataset, RDF.type, DCAT.Dataset) in graph
    assert {str(k) for k in graph.objects(dataset, DCAT.keyword)} == {"nlp", "text"}
    distributions = list(graph.objects(dataset, DCAT.distribution))
    assert len(distributions) == 2
    sizes = {int(graph.value(d, DCAT.byteSize)) for d in distributions}  # type: ignore[arg-type]
    assert sizes == {12, 0}
    licenses = {graph.value(d, DCTERMS.license) for d in distributions}
    assert licenses == {URIRef("http://spdx.org/licenses/CC-BY-4.0")}
    conforms, text = _conforms(graph)
    assert conforms, text


def test_the_catalog_lists_its_datasets_and_conforms() -> None:
    views = [_view("wiki"), _view("code", license="Custom license, see README")]
    document = jsonld(catalog_graph(views, BASE, "test catalog"))
    graph = Graph().parse(data=document, format="json-ld")
    (catalog,) = graph.subjects(RDF.type, DCAT.Catalog)
    assert len(list(graph.objects(catalog, DCAT.dataset))) == 2
    conforms, text = _conforms(graph)
    assert conforms, text


def test_the_shapes_catch_a_dataset_without_title() -> None:
    graph = entry_graph(_view(), BASE)
    graph.remove((None, DCTERMS.title, None))
    conforms, text = _conforms(graph)
    assert not conforms and "title" in text

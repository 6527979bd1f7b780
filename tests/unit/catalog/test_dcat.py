"""DCAT-AP output: rdflib reads it back, and it conforms to the shapes shipped with it."""

from __future__ import annotations

import json
from pathlib import Path

import pyshacl
from catalog_views import BASE, version_view
from rdflib import Graph, Namespace, URIRef
from rdflib.namespace import DCTERMS, RDF

import aifactory.catalog
from aifactory.catalog import catalog_graph, entry_graph, jsonld

SHAPES = Path(aifactory.catalog.__file__).parent / "shapes" / "dcat-ap-minimal.ttl"
DCAT = Namespace("http://www.w3.org/ns/dcat#")


def _conforms(graph: Graph) -> tuple[bool, str]:
    conforms, _report, text = pyshacl.validate(
        graph, shacl_graph=Graph().parse(SHAPES, format="turtle")
    )
    return bool(conforms), str(text)


def test_an_entry_reads_back_from_json_ld_and_conforms() -> None:
    document = jsonld(entry_graph(version_view(), BASE))
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
    views = [version_view("wiki"), version_view("code", license="Custom license, see README")]
    document = jsonld(catalog_graph(views, BASE, "test catalog"))
    graph = Graph().parse(data=document, format="json-ld")
    (catalog,) = graph.subjects(RDF.type, DCAT.Catalog)
    assert len(list(graph.objects(catalog, DCAT.dataset))) == 2
    conforms, text = _conforms(graph)
    assert conforms, text


def test_the_shapes_catch_a_dataset_without_title() -> None:
    graph = entry_graph(version_view(), BASE)
    graph.remove((None, DCTERMS.title, None))
    conforms, text = _conforms(graph)
    assert not conforms and "title" in text

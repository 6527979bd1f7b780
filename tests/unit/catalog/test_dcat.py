"""DCAT-AP output: rdflib reads it back, and it conforms to DCAT-AP 3.0.1's own SHACL shapes."""

from __future__ import annotations

import json

from catalog_views import BASE, version_view
from rdflib import Graph, Namespace, URIRef
from rdflib.namespace import DCTERMS, RDF

from aifactory.catalog import catalog_graph, entry_graph, jsonld
from dcat_ap_shapes import conforms

DCAT = Namespace("http://www.w3.org/ns/dcat#")


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
    ok, text = conforms(graph)
    assert ok, text


def test_the_catalog_lists_its_datasets_and_conforms() -> None:
    views = [version_view("wiki"), version_view("code", license="Custom license, see README")]
    document = jsonld(catalog_graph(views, BASE, "test catalog"))
    graph = Graph().parse(data=document, format="json-ld")
    (catalog,) = graph.subjects(RDF.type, DCAT.Catalog)
    assert len(list(graph.objects(catalog, DCAT.dataset))) == 2
    ok, text = conforms(graph)
    assert ok, text


def test_the_shapes_catch_a_dataset_without_title() -> None:
    graph = entry_graph(version_view(), BASE)
    graph.remove((None, DCTERMS.title, None))
    ok, text = conforms(graph)
    assert not ok and "title" in text

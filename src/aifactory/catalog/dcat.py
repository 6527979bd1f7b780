"""DCAT-AP descriptions of entries and of the catalog, built as RDF graphs with rdflib.

An entry's version is a ``dcat:Dataset`` (a model too: DCAT-AP has no class
of its own for one; ``dct:type`` says which), each of its files a
``dcat:Distribution`` with its size and SPDX checksum. The catalog is a
``dcat:Catalog`` listing the datasets the reader may see, which is what
CKAN's DCAT harvester reads. JSON-LD comes from rdflib's own serializer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF, RDFS, SKOS, XSD

from aifactory.store import CatalogEntryRecord, CatalogVersionRecord

__all__ = ["SPDX", "CatalogView", "catalog_graph", "entry_graph", "jsonld"]

SPDX = Namespace("http://spdx.org/rdf/terms#")
_ADMS = Namespace("http://www.w3.org/ns/adms#")
# DCAT 3's version property (rdflib's closed DCAT namespace predates it).
_VERSION = URIRef("http://www.w3.org/ns/dcat#version")
_SPDX_ID = re.compile(r"^[A-Za-z0-9.+-]+$")
_KINDS = {
    "dataset": URIRef("http://purl.org/dc/dcmitype/Dataset"),
    "model": URIRef("http://purl.org/dc/dcmitype/Software"),
}
# The EU's file-type authority table, the vocabulary DCAT-AP names for ``dct:format``.
_FILE_TYPE = "http://publications.europa.eu/resource/authority/file-type/"
_FILE_TYPES = {
    "csv": "CSV",
    "json": "JSON",
    "parquet": "PARQUET",
    "txt": "TXT",
    "zip": "ZIP",
    "tar": "TAR",
    "gz": "GZIP",
    "gzip": "GZIP",
}
_CONTEXT = {
    "dcat": str(DCAT),
    "dct": str(DCTERMS),
    "foaf": str(FOAF),
    "spdx": str(SPDX),
    "xsd": str(XSD),
    "rdfs": str(RDFS),
    "skos": str(SKOS),
}


@dataclass(frozen=True)
class CatalogView:
    """One entry at one of its versions, as a reader sees it."""

    entry: CatalogEntryRecord
    version: CatalogVersionRecord

    def iri(self, base_url: str) -> str:
        """The entry's address (its latest version answers there)."""
        return f"{base_url}/api/catalog/{self.entry.tenant}/{self.entry.name}"

    def version_iri(self, base_url: str) -> str:
        """This version's address."""
        return f"{self.iri(base_url)}/versions/{self.version.version}"


def entry_graph(view: CatalogView, base_url: str, graph: Graph | None = None) -> Graph:
    """The DCAT-AP graph of one entry version (added to ``graph`` when given)."""
    graph = graph if graph is not None else _new_graph()
    words = view.version.description
    dataset = URIRef(view.version_iri(base_url))
    graph.add((dataset, RDF.type, DCAT.Dataset))
    graph.add((dataset, DCTERMS.identifier, Literal(f"{view.entry.tenant}/{view.entry.name}")))
    graph.add((dataset, DCTERMS.title, Literal(words["title"])))
    graph.add((dataset, DCTERMS.description, Literal(words.get("description") or words["title"])))
    kind = _KINDS[view.entry.kind]
    graph.add((kind, RDF.type, SKOS.Concept))
    graph.add((kind, SKOS.prefLabel, Literal(view.entry.kind)))
    graph.add((dataset, DCTERMS.type, kind))
    graph.add((dataset, _VERSION, Literal(str(view.version.version))))
    graph.add((dataset, DCTERMS.issued, Literal(view.version.created_at, datatype=XSD.dateTime)))
    graph.add((dataset, DCTERMS.isVersionOf, URIRef(view.iri(base_url))))
    landing = URIRef(view.version_iri(base_url))
    graph.add((landing, RDF.type, FOAF.Document))
    graph.add((dataset, DCAT.landingPage, landing))
    for keyword in words.get("keywords", []):
        graph.add((dataset, DCAT.keyword, Literal(keyword)))
    if words.get("creator"):
        creator = BNode()
        graph.add((creator, RDF.type, FOAF.Agent))
        graph.add((creator, FOAF.name, Literal(words["creator"])))
        graph.add((dataset, DCTERMS.creator, creator))
    license_node = _license(graph, words["license"])
    for listed in view.version.files:
        graph.add((dataset, DCAT.distribution, _distribution(graph, view, base_url, listed)))
        graph.add((URIRef(_file_iri(view, base_url, listed)), DCTERMS.license, license_node))
    return graph


def catalog_graph(views: Iterable[CatalogView], base_url: str, title: str) -> Graph:
    """The DCAT-AP catalog of ``views``, published by the factory at ``base_url``."""
    graph = _new_graph()
    catalog = URIRef(f"{base_url}/api/catalog.jsonld")
    publisher = URIRef(base_url)
    graph.add((catalog, RDF.type, DCAT.Catalog))
    graph.add((catalog, DCTERMS.title, Literal(title)))
    graph.add((catalog, DCTERMS.description, Literal(f"{title}: datasets and models")))
    graph.add((publisher, RDF.type, FOAF.Agent))
    graph.add((publisher, FOAF.name, Literal(title)))
    graph.add((catalog, DCTERMS.publisher, publisher))
    for view in views:
        entry_graph(view, base_url, graph)
        graph.add((catalog, DCAT.dataset, URIRef(view.version_iri(base_url))))
    return graph


def jsonld(graph: Graph) -> str:
    """The graph as compact JSON-LD."""
    return graph.serialize(format="json-ld", context=_CONTEXT, auto_compact=True)


def _new_graph() -> Graph:
    graph = Graph()
    for prefix, namespace in _CONTEXT.items():
        graph.bind(prefix, namespace)
    return graph


def _file_iri(view: CatalogView, base_url: str, listed: dict[str, object]) -> str:
    return f"{view.version_iri(base_url)}/files/{quote(str(listed['path']))}"


def _distribution(
    graph: Graph, view: CatalogView, base_url: str, listed: dict[str, object]
) -> URIRef:
    url = URIRef(_file_iri(view, base_url, listed))
    graph.add((url, RDF.type, DCAT.Distribution))
    graph.add((url, DCAT.accessURL, url))
    graph.add((url, DCAT.downloadURL, url))
    graph.add((url, DCTERMS.title, Literal(str(listed["path"]))))
    graph.add(
        (url, DCAT.byteSize, Literal(int(str(listed["size"])), datatype=XSD.nonNegativeInteger))
    )
    if view.version.description.get("format"):
        graph.add((url, DCTERMS.format, _format(graph, str(view.version.description["format"]))))
    checksum = BNode()
    graph.add((checksum, RDF.type, SPDX.Checksum))
    graph.add((checksum, SPDX.algorithm, SPDX.checksumAlgorithm_sha256))
    graph.add(
        (checksum, SPDX.checksumValue, Literal(str(listed["sha256"]), datatype=XSD.hexBinary))
    )
    graph.add((url, SPDX.checksum, checksum))
    return url


def _format(graph: Graph, name: str) -> URIRef | BNode:
    """The EU file type named ``name``, or a node labelled with it (DCAT-AP wants a node)."""
    code = _FILE_TYPES.get(name.lower().lstrip("."))
    node: URIRef | BNode = URIRef(_FILE_TYPE + code) if code else BNode()
    graph.add((node, RDF.type, DCTERMS.MediaTypeOrExtent))
    graph.add((node, RDFS.label, Literal(name)))
    return node


def _license(graph: Graph, name: str) -> URIRef | BNode:
    if _SPDX_ID.match(name):
        node: URIRef | BNode = URIRef(f"http://spdx.org/licenses/{name}")
    else:
        node = BNode()
    graph.add((node, RDF.type, DCTERMS.LicenseDocument))
    graph.add((node, RDFS.label, Literal(name)))
    return node

"""The open data catalog: datasets and models over the object store.

Entries point at a bucket and prefix; each registration that changes a file
or a word makes an immutable version with server-computed checksums. Entries
are private, shared with named tenants, or public; they are found by text
and facets, published as DCAT-AP JSON-LD, and split for parallel reads.
"""

from aifactory.catalog.croissant import croissant
from aifactory.catalog.dcat import CatalogView, catalog_graph, entry_graph, jsonld
from aifactory.catalog.lineage import PROV_RELATIONS, Lineage, Use
from aifactory.catalog.partitions import Partition, partitions, read_records
from aifactory.catalog.references import Reference
from aifactory.catalog.s3_lineage import S3Lineage
from aifactory.catalog.service import Catalog, Gone, SearchQuery, may_see
from aifactory.catalog.uses import INPUTS_ENV, CatalogUses

__all__ = [
    "INPUTS_ENV",
    "PROV_RELATIONS",
    "Catalog",
    "CatalogUses",
    "CatalogView",
    "Gone",
    "Lineage",
    "Partition",
    "Reference",
    "S3Lineage",
    "SearchQuery",
    "Use",
    "catalog_graph",
    "croissant",
    "entry_graph",
    "jsonld",
    "may_see",
    "partitions",
    "read_records",
]

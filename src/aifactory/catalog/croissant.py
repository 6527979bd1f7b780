"""Croissant (MLCommons) descriptions of dataset versions, built and checked by mlcroissant.

The description names the version's files with their sizes and SHA-256; it
has no record sets yet (the fields inside the files are not described).
mlcroissant is imported on first use: it brings pandas along.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any
from urllib.parse import quote

from aifactory.catalog.dcat import CatalogView
from aifactory.errors import BadRequest

__all__ = ["croissant"]

_MEDIA_TYPES = {
    "jsonl": "application/jsonlines",
    "csv": "text/csv",
    "parquet": "application/x-parquet",
    "json": "application/json",
    "text": "text/plain",
}


def croissant(view: CatalogView, base_url: str) -> dict[str, Any]:
    """The Croissant JSON-LD of a dataset version.

    Raises:
        BadRequest: the entry is a model (Croissant describes datasets).
    """
    if view.entry.kind != "dataset":
        raise BadRequest(
            f"{view.entry.tenant}/{view.entry.name} is a model; Croissant describes datasets.",
            fix="read its DCAT-AP description (dcat.jsonld) instead",
        )
    import mlcroissant as mlc

    # mlcroissant logs every recommendation it misses through absl, at warning level.
    logging.getLogger("absl").setLevel(logging.ERROR)
    words = view.version.description
    media_type = _MEDIA_TYPES.get(words.get("format", ""), "application/octet-stream")
    ctx = mlc.Context()
    url = view.version_iri(base_url)
    files = [
        mlc.FileObject(
            ctx=ctx,
            id=_file_id(listed["path"]),
            name=listed["path"],
            content_url=f"{url}/files/{quote(listed['path'])}",
            content_size=f"{listed['size']} B",
            encoding_formats=[media_type],
            sha256=listed["sha256"],
        )
        for listed in view.version.files
    ]
    identifier = f"{view.entry.tenant}/{view.entry.name}"
    metadata = mlc.Metadata(
        ctx=ctx,
        name=words["title"],
        description=words.get("description") or words["title"],
        license=[_license(words["license"])],
        url=url,
        version=f"{view.version.version}.0.0",
        keywords=list(words.get("keywords", [])),
        creators=[mlc.Person(ctx=ctx, name=words["creator"])] if words.get("creator") else [],
        date_published=view.version.created_at,
        cite_as=f"{words['title']} ({identifier}, version {view.version.version}), {url}",
        distribution=files,
        record_sets=[],
    )
    document: dict[str, Any] = metadata.to_json()
    return document


def _file_id(path: str) -> str:
    # mlcroissant refuses ids with whitespace, even escaped; names keep the path.
    return "file-" + hashlib.sha256(path.encode()).hexdigest()[:16]


def _license(name: str) -> str:
    return f"https://spdx.org/licenses/{name}" if " " not in name else name

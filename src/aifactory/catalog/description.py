"""What an entry says about itself: a request, or ``catalog.yaml`` inside the prefix."""

from __future__ import annotations

import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aifactory.errors import BadRequest

__all__ = ["FORMATS", "Description", "EntryRequest", "guess_format", "read_description"]

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)
_TENANT = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".gguf": "gguf",
    ".safetensors": "safetensors",
    ".json": "json",
    ".txt": "text",
}


class Description(BaseModel):
    """The words of one version: what is searched and published."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=300)
    description: str = Field(default="", max_length=20_000)
    license: str = Field(min_length=1, max_length=100)
    keywords: list[str] = Field(default_factory=list, max_length=50)
    creator: str = Field(default="", max_length=300)
    format: str = Field(default="", max_length=50)
    metadata: dict[str, Any] = Field(default_factory=dict)


class EntryRequest(Description):
    """A registration: where the files are, who may see them, and their description."""

    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = Field(default="", max_length=1024)
    name: str = Field(default="", max_length=64)
    kind: Literal["dataset", "model"] = "dataset"
    visibility: Literal["private", "shared", "public"] = "private"
    shared_with: list[str] = Field(default_factory=list, max_length=100)

    @classmethod
    def of(cls, document: dict[str, Any], described: dict[str, Any]) -> EntryRequest:
        """The request ``document`` makes, over the prefix's ``catalog.yaml`` (``described``).

        Raises:
            BadRequest: naming the first field that is missing or wrong.
        """
        try:
            request = cls.model_validate({**described, **document})
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"]) or "body"
            raise BadRequest(
                f"{field}: {error['msg']}.",
                fix="give title and license (here or in the prefix's catalog.yaml), "
                "and bucket and prefix",
                param=field,
            ) from exc
        name = request.name or _name_of(request.bucket, request.prefix)
        if not _NAME.match(name):
            raise BadRequest(
                f"name {name!r} is not a valid entry name.",
                fix="use lower-case letters, digits, '.', '_' and '-' (at most 64)",
                param="name",
            )
        for tenant in request.shared_with:
            if not _TENANT.match(tenant):
                raise BadRequest(
                    f"shared_with names {tenant!r}, which is not a tenant's name.",
                    param="shared_with",
                )
        return request.model_copy(update={"name": name, "prefix": request.prefix.strip("/")})

    def description_only(self) -> Description:
        """The version's words, without where and who."""
        return Description.model_validate(self.model_dump(include=set(Description.model_fields)))


def read_description(text: str) -> dict[str, Any]:
    """The fields of a ``catalog.yaml``.

    Raises:
        BadRequest: it is not YAML, or not a mapping.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadRequest(
            f"catalog.yaml is not valid YAML ({exc}).", fix="fix the file in the prefix"
        ) from exc
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise BadRequest("catalog.yaml must be a mapping of fields.", fix="see `aif catalog add`")
    return document


def guess_format(paths: list[str]) -> str:
    """The format most of ``paths`` share by their suffix, or ''."""
    counts: dict[str, int] = {}
    for path in paths:
        suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
        if suffix in FORMATS:
            counts[FORMATS[suffix]] = counts.get(FORMATS[suffix], 0) + 1
    return max(counts, key=lambda name: counts[name]) if counts else ""


def _name_of(bucket: str, prefix: str) -> str:
    last = prefix.strip("/").rsplit("/", 1)[-1] or bucket
    return re.sub(r"[^a-z0-9._-]+", "-", last.lower()).strip("-")[:64]

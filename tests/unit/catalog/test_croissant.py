"""Croissant output: mlcroissant loads it back without errors; a model has none."""

from __future__ import annotations

import dataclasses

import mlcroissant as mlc
import pytest
from catalog_views import BASE, version_view

from aifactory.catalog import croissant
from aifactory.errors import BadRequest


def test_a_dataset_version_validates_with_mlcroissant() -> None:
    document = croissant(version_view(), BASE)
    dataset = mlc.Dataset(jsonld=document)
    assert not dataset.metadata.ctx.issues.errors
    assert dataset.metadata.name == "Wiki sentences"
    files = {f.name: f for f in dataset.metadata.distribution}
    assert files["a/part-0.jsonl"].sha256 == "ab" * 32
    assert files["a/part-0.jsonl"].content_url.endswith("/versions/2/files/a/part-0.jsonl")


def test_an_invalid_description_is_refused_by_mlcroissant() -> None:
    document = croissant(version_view(), BASE)
    del document["distribution"][0]["contentUrl"]
    with pytest.raises(mlc.ValidationError, match="contentUrl"):
        mlc.Dataset(jsonld=document)


def test_a_model_has_no_croissant() -> None:
    view = version_view()
    model = dataclasses.replace(view, entry=dataclasses.replace(view.entry, kind="model"))
    with pytest.raises(BadRequest, match="Croissant describes datasets"):
        croissant(model, BASE)

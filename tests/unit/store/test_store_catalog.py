"""The catalog's entries and versions, on SQLite."""

from __future__ import annotations

from aifactory.store import Store
from catalog_store_cases import (
    concurrent_first_registrations_make_one_version,
    search_matches_words_by_prefix_in_the_full_text_index,
    versions_are_immutable_and_new_only_on_change,
)


def test_versions_are_immutable_and_new_only_on_change(store: Store) -> None:
    versions_are_immutable_and_new_only_on_change(store)


def test_search_matches_words_by_prefix_in_the_full_text_index(store: Store) -> None:
    search_matches_words_by_prefix_in_the_full_text_index(store)


def test_concurrent_first_registrations_make_one_version(store: Store) -> None:
    concurrent_first_registrations_make_one_version(store)

"""The roles table: what each role may do and which keys it may mint."""

from __future__ import annotations

import pytest

from aifactory.errors import Forbidden
from aifactory.tenancy import ROLES, Action, grants, may_mint
from aifactory.tenancy.roles import check

EXPECTED = {
    "admin": set(Action),
    "tenant-admin": set(Action) - {Action.SITE},
    "member": {Action.INFER, Action.READ, Action.DEPLOY},
    "inference": {Action.INFER},
}


@pytest.mark.parametrize("role", ROLES)
def test_each_role_may_do_exactly_its_actions(role: str) -> None:
    assert {action for action in Action if grants(role, action)} == EXPECTED[role]


def test_an_unknown_role_may_do_nothing_and_a_refusal_names_who_may() -> None:
    assert not any(grants("user", action) for action in Action)
    with pytest.raises(Forbidden) as refused:
        check("member", Action.MANAGE_TENANT)
    assert "'member'" in refused.value.message and "'tenant-admin'" in (refused.value.fix or "")


def test_no_role_mints_a_key_above_its_own() -> None:
    assert may_mint("admin", "admin")
    assert may_mint("tenant-admin", "inference") and may_mint("tenant-admin", "tenant-admin")
    assert not may_mint("tenant-admin", "admin")
    assert not any(may_mint(role, minted) for role in ("member", "inference") for minted in ROLES)

"""Identities: names checked before use, how the control plane becomes one, tenants mapped."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aifactory.errors import ConfigError
from aifactory.identity import Identity, Privilege, check_user_name, lookup, workload_user
from aifactory.store import TenantRow
from aifactory.tenancy import TenantIdentities

needs_root = pytest.mark.skipif(os.getuid() != 0, reason="the test users exist where CI runs")
ALICE = Identity(user="alice", uid=4242, group="lab", gid=4343, groups=(5000, 5001), home="/h")


@pytest.mark.parametrize("name", ["../etc", "a;b", "$(id)", "x\ny", "Root", "", "a" * 33, "-x"])
def test_hostile_names_are_refused_before_any_lookup(name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid name"):
        check_user_name(name)


@pytest.mark.parametrize("name", ["root", "daemon", "nobody", "aif-workload"])
def test_root_and_system_users_are_never_a_tenants(name: str) -> None:
    if name == "aif-workload" and os.getuid() != 0:
        pytest.skip("the workload user is created where CI runs")
    with pytest.raises(ConfigError, match="system user"):
        lookup(name)


def test_an_unknown_user_says_how_to_create_it() -> None:
    with pytest.raises(ConfigError) as raised:
        lookup("aif-nobody-here")
    assert "useradd" in raised.value.fix


def test_the_workload_user_may_be_a_system_user_but_never_root() -> None:
    with pytest.raises(ConfigError, match="root"):
        workload_user("root")
    assert workload_user("nobody").uid == 65534


def test_root_starts_local_workloads_with_exactly_the_identitys_ids(tmp_path: Path) -> None:
    argv = Privilege("root", tmp_path).process_command(ALICE, ["python", "-m", "x"])
    assert argv == [
        "setpriv",
        "--reuid=4242",
        "--regid=4343",
        "--groups=5000,5001",
        "--no-new-privs",
        "--",
        "python",
        "-m",
        "x",
    ]
    # Scheduler commands are not wrapped as root: sbatch takes --uid/--gid.
    assert Privilege("root", tmp_path).command(ALICE, ["sbatch"]) == ["sbatch"]


def test_a_launch_prefix_names_the_user_in_one_argument(tmp_path: Path) -> None:
    privilege = Privilege("prefix", tmp_path, ("sudo", "-n", "-u", "{user}", "--"))
    hostile = ["echo", "$(id); rm -rf /"]
    assert privilege.process_command(ALICE, hostile) == [
        "sudo",
        "-n",
        "-u",
        "alice",
        "--",
        *hostile,
    ]
    assert privilege.workload_dir(ALICE) == Path("/h/.aifactory")


def test_without_root_or_a_prefix_nothing_starts_and_the_refusal_says_what_to_set(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as raised:
        Privilege("prefix", tmp_path, ()).check(ALICE)
    assert "AIFACTORY_LAUNCH_PREFIX" in raised.value.fix
    assert "AIFACTORY_INSECURE_SINGLE_USER" in raised.value.fix


def test_a_workload_gets_its_own_login_and_none_of_the_control_planes_settings(
    tmp_path: Path,
) -> None:
    env = Privilege("root", tmp_path).environment(
        ALICE, {"PATH": "/bin", "HOME": "/root", "AIFACTORY_API_KEY": "aif-admin"}
    )
    assert env == {"PATH": "/bin", "HOME": "/h", "USER": "alice", "LOGNAME": "alice"}


def _tenant(name: str, user: str | None = None) -> TenantRow:
    return TenantRow(id=1, name=name, unix_user=user, created_at=datetime.now(UTC))


@needs_root
def test_a_tenant_runs_as_its_own_user_else_the_sites_rule_else_the_workload_user(
    tmp_path: Path,
) -> None:
    plain = TenantIdentities(Privilege("root", tmp_path), "aif-workload")
    assert plain.of(_tenant("physics", "aif-alice")).user == "aif-alice"
    assert plain.of(_tenant("physics")).user == "aif-workload"
    assert plain.of(None).user == "aif-workload"
    templated = TenantIdentities(Privilege("root", tmp_path), "aif-workload", "aif-{tenant}")
    assert templated.of(_tenant("bob")).user == "aif-bob"
    with pytest.raises(ConfigError, match="does not exist"):
        templated.of(_tenant("nobody-mapped"))


def test_single_user_mode_runs_everything_as_the_control_plane(tmp_path: Path) -> None:
    single = TenantIdentities(Privilege("single-user", tmp_path), "aif-workload")
    assert single.of(_tenant("physics", "aif-alice")).uid == os.getuid()

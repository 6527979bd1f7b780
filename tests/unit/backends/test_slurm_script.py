from pathlib import Path

import pytest

from aifactory.backends import AllocationRequest, SiteDefaults
from aifactory.backends.slurm.backend import SlurmBackend
from aifactory.config import load_settings
from aifactory.errors import BackendError, ConfigError, SpecError
from aifactory.specs import Resources, SlurmOptions, load_service

HOSTILE = "x; rm -rf ~ $(touch /tmp/pwned) `id`"


def _request(**kwargs: object) -> AllocationRequest:
    fields: dict[str, object] = {
        "replica_id": "chat-abc123",
        "service": "chat",
        "argv": ("/venv/bin/python", "-m", "aifactory.launcher", "--", "engine", "--port",
                 "{port}"),
        "resources": Resources(cpus=4, memory_gib=8, gpus=2),
        "time_limit_s": 3600.0,
        "log_path": Path("/shared/aif/logs/chat/chat-abc123.log"),
        "env": {"HF_HOME": "/shared/hf"},
        "slurm": SlurmOptions(
            partition="gpu", account="proj42", qos="normal", constraint="a100&nvlink",
            options={"exclusive": True, "mail-type": "FAIL", "requeue": False},
        ),
    }  # fmt: skip
    fields.update(kwargs)
    return AllocationRequest(**fields)  # type: ignore[arg-type]


def _render(request: AllocationRequest, site: SiteDefaults | None = None) -> str:
    backend = SlurmBackend("ab12cd34", site=site or SiteDefaults())
    return backend.render(request)


def test_sbatch_lines() -> None:
    script = _render(_request())
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH --job-name=aif-chat-abc123",
        "#SBATCH --comment=aifactory:ab12cd34:chat-abc123",
        "#SBATCH --output=/shared/aif/logs/chat/chat-abc123.log",
        "#SBATCH --open-mode=append",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=8192M",
        "#SBATCH --time=60",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj42",
        "#SBATCH --qos=normal",
        "#SBATCH --constraint=a100&nvlink",
        "#SBATCH --exclusive",
        "#SBATCH --mail-type=FAIL",
    ]
    assert script.splitlines()[0] == "#!/bin/bash"
    assert "export HF_HOME=/shared/hf" in script
    assert script.rstrip().endswith(
        "exec /venv/bin/python -m aifactory.launcher -- engine --port '{port}'"
    )


def test_site_defaults_and_preamble() -> None:
    site = SiteDefaults(partition="cpu", account="default-acct", preamble="module load python/3.11")
    script = _render(_request(slurm=SlurmOptions(account="mine")), site)
    assert "#SBATCH --partition=cpu" in script
    assert "#SBATCH --account=mine" in script  # the spec wins over the site default
    assert "# site preamble\nmodule load python/3.11" in script


def test_a_replica_without_time_limit_gets_the_sites_walltime() -> None:
    assert "#SBATCH --time=1440" in _render(_request(time_limit_s=None))  # 24 h
    site = SiteDefaults(time_limit_s=6 * 3600)
    assert "#SBATCH --time=360" in _render(_request(time_limit_s=None), site)
    assert "#SBATCH --time=60" in _render(_request(time_limit_s=3600.0), site)  # the spec's wins


def test_the_site_defaults_come_from_the_settings() -> None:
    settings = load_settings(
        slurm_partition="cpu", slurm_lend_partition="lend", default_time_limit_s=7200
    )
    site = SiteDefaults.from_settings(settings)
    assert (site.partition, site.lend_partition, site.account) == ("cpu", "lend", None)
    assert site.time_limit_s == 7200
    assert load_settings().default_time_limit_s == 24 * 3600
    with pytest.raises(ConfigError, match="default_time_limit_s"):
        load_settings(default_time_limit_s=0)  # never unlimited


def test_hostile_env_and_argv_are_quoted() -> None:
    script = _render(_request(env={"PROBE": HOSTILE}, argv=("echo", HOSTILE)))
    assert "export PROBE='x; rm -rf ~ $(touch /tmp/pwned) `id`'" in script
    assert "exec echo 'x; rm -rf ~ $(touch /tmp/pwned) `id`'" in script


@pytest.mark.parametrize(
    "slurm",
    [
        "{partition: 'gpu\\n#SBATCH --uid=0'}",
        "{account: 'a b'}",
        "{qos: 'x;id'}",
        "{constraint: 'a100 && $(id)'}",
        "{options: {chdir: /tmp}}",
        "{options: {mail-user: 'me@x.org\\n#SBATCH --uid=0'}}",
        "{options: {wckey: '`id`'}}",
    ],
)
def test_hostile_slurm_options_are_refused(slurm: str) -> None:
    spec = (
        "name: chat\nmodels: [m]\nengine: {type: llama.cpp, model: x}\n"
        f"backend: slurm\nslurm: {slurm}\n"
    )
    with pytest.raises(SpecError, match="slurm"):
        load_service(spec)


def test_unsafe_log_path_is_refused() -> None:
    with pytest.raises(BackendError, match="AIFACTORY_DATA_DIR"):
        _render(_request(log_path=Path("/tmp/my data/x.log")))


def test_rotation_lead_must_fit_the_time_limit() -> None:
    spec = "name: chat\nmodels: [m]\nengine: {type: llama.cpp, model: x}\ntime_limit: 1m\n"
    with pytest.raises(SpecError, match="rotation_lead"):
        load_service(spec)
    assert load_service(spec + "rotation_lead: 20s\n").rotation_lead_s == 20

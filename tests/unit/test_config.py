from pathlib import Path

import pytest

from aifactory.config import load_settings
from aifactory.errors import ConfigError


def test_defaults_work_without_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIFACTORY_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = load_settings()
    assert settings.port == 8000 and settings.host == "127.0.0.1"
    assert settings.default_backend == "local"
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'aifactory' / 'aifactory.db'}"
    assert settings.control_url == "http://127.0.0.1:8000"


def test_precedence_argument_env_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('port = 9100\nhost = "0.0.0.0"\nlog_level = "debug"\n')
    monkeypatch.setenv("AIFACTORY_CONFIG", str(config))
    monkeypatch.setenv("AIFACTORY_PORT", "9200")
    settings = load_settings()
    assert settings.port == 9200  # env beats TOML
    assert settings.log_level == "debug"  # TOML beats default
    assert settings.control_url == "http://127.0.0.1:9200"  # 0.0.0.0 is not dialable
    assert load_settings(port=9300).port == 9300  # argument beats env


def test_bad_value_names_key_value_and_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIFACTORY_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("AIFACTORY_DEFAULT_BACKEND", "nomad")
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "'default_backend'" in text and "'nomad'" in text
    assert "AIFACTORY_DEFAULT_BACKEND" in text


def test_unknown_toml_key_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("prot = 1\n")
    monkeypatch.setenv("AIFACTORY_CONFIG", str(config))
    with pytest.raises(ConfigError, match="prot"):
        load_settings()


def test_nothing_else_reads_the_environment() -> None:
    src = Path(__file__).parents[2] / "src" / "aifactory"
    readers = [
        p.relative_to(src).as_posix()
        for p in src.rglob("*.py")
        if "os.environ" in p.read_text() or "getenv" in p.read_text()
    ]
    # The local backend, Slurm's submit and the launcher pass the environment
    # on to child processes (without the control plane's AIFACTORY_* settings;
    # the launcher adds an agent's secrets); none reads a setting.
    assert sorted(readers) == [
        "backends/local.py",
        "backends/slurm/identity.py",
        "config.py",
        "launcher.py",
    ]


def test_kubernetes_host_paths_are_a_json_list_of_absolute_paths(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIFACTORY_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("AIFACTORY_KUBERNETES_HOST_PATHS", '["/srv/venv", "/srv/src"]')
    assert load_settings().kubernetes_host_paths == (Path("/srv/venv"), Path("/srv/src"))
    monkeypatch.setenv("AIFACTORY_KUBERNETES_HOST_PATHS", '["venv"]')
    with pytest.raises(ConfigError, match="absolute"):
        load_settings()


def test_tls_makes_the_control_url_https_and_silences_the_plaintext_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIFACTORY_CONFIG", str(tmp_path / "absent.toml"))
    assert load_settings(host="127.0.0.1").plaintext_warning == ""
    assert load_settings(host="127.0.0.2").plaintext_warning == ""
    exposed = load_settings(host="0.0.0.0", port=8443)
    assert "UNENCRYPTED API" in exposed.plaintext_warning
    assert "0.0.0.0:8443" in exposed.plaintext_warning
    assert "AIFACTORY_TLS_CERT" in exposed.plaintext_warning
    assert "UNENCRYPTED" in load_settings(host="node1.example").plaintext_warning
    cert = tmp_path / "api.pem"
    tls = load_settings(host="0.0.0.0", port=8443, tls_cert=cert, tls_key=cert)
    assert tls.plaintext_warning == ""
    assert tls.control_url == "https://127.0.0.1:8443"
    assert tls.tls_ca_file == cert
    site_ca = tmp_path / "ca.pem"
    assert load_settings(tls_cert=cert, tls_ca=site_ca).tls_ca_file == site_ca

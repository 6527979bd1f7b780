"""awscli (`aws s3 cp|sync|ls|rm`, multipart by size) and s3fs against the real server."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import s3fs

from .objects_server import S3Server, start_objects_server

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_objects_server(tmp_path_factory.mktemp("objects-clients"))
    yield server
    assert server.stop() in (0, -15), server.log_tail()


@pytest.fixture(scope="module")
def credentials(s3server: S3Server) -> tuple[str, str]:
    return s3server.issue("clients")


def _aws(
    s3server: S3Server, credentials: tuple[str, str], config: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    aws = shutil.which("aws", path=str(Path(sys.executable).parent))
    assert aws, "awscli is in the dev extra: pip install -e '.[dev]'"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": credentials[0],
        "AWS_SECRET_ACCESS_KEY": credentials[1],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(config.parent / "absent"),
    }
    result = subprocess.run(
        [aws, "--endpoint-url", s3server.url, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"aws {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def test_awscli_cp_sync_ls_rm(
    s3server: S3Server, credentials: tuple[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "aws-config"
    config.write_text("[default]\n")
    aws = shutil.which("aws", path=str(Path(sys.executable).parent))
    assert aws
    for setting, value in (("multipart_threshold", "5MB"), ("multipart_chunksize", "5MB")):
        subprocess.run(
            [aws, "configure", "set", f"default.s3.{setting}", value],
            env={**os.environ, "AWS_CONFIG_FILE": str(config)},
            check=True,
        )
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * MiB))
    _aws(s3server, credentials, config, "s3", "mb", "s3://cli")
    _aws(s3server, credentials, config, "s3", "cp", str(big), "s3://cli/in/big.bin")
    stored = s3server.root / "cli" / "in" / "big.bin"
    assert stored.read_bytes() == big.read_bytes()
    back = tmp_path / "back.bin"
    _aws(s3server, credentials, config, "s3", "cp", "s3://cli/in/big.bin", str(back))
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()
    head = _aws(
        s3server,
        credentials,
        config,
        "s3api",
        "head-object",
        "--bucket",
        "cli",
        "--key",
        "in/big.bin",
    )
    assert '-3\\"' in head.stdout  # 11 MiB in 5 MB parts: a multipart ETag

    tree = tmp_path / "tree"
    for name in ("a.txt", "sub/b.txt", "sub/deeper/c.txt"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(name)
    _aws(s3server, credentials, config, "s3", "sync", str(tree), "s3://cli/tree")
    listing = _aws(
        s3server, credentials, config, "s3", "ls", "--recursive", "s3://cli/tree/"
    ).stdout
    assert [line.split()[-1] for line in listing.splitlines()] == [
        "tree/a.txt",
        "tree/sub/b.txt",
        "tree/sub/deeper/c.txt",
    ]
    again = _aws(s3server, credentials, config, "s3", "sync", str(tree), "s3://cli/tree").stdout
    assert again.strip() == ""  # nothing changed, nothing copied
    top = _aws(s3server, credentials, config, "s3", "ls", "s3://cli/tree/").stdout
    assert "PRE sub/" in top and "a.txt" in top
    down = tmp_path / "down"
    _aws(s3server, credentials, config, "s3", "sync", "s3://cli/tree", str(down))
    assert (down / "sub" / "deeper" / "c.txt").read_text() == "sub/deeper/c.txt"
    _aws(s3server, credentials, config, "s3", "rm", "--recursive", "s3://cli/tree")
    assert not (s3server.root / "cli" / "tree").exists()
    _aws(s3server, credentials, config, "s3", "rm", "s3://cli/in/big.bin")
    _aws(s3server, credentials, config, "s3", "rb", "s3://cli")
    assert not (s3server.root / "cli").exists()


def test_s3fs_mkdir_pipe_cat_ls_find_rm(s3server: S3Server, credentials: tuple[str, str]) -> None:
    fs: Any = s3fs.S3FileSystem(
        key=credentials[0],
        secret=credentials[1],
        client_kwargs={"endpoint_url": s3server.url, "region_name": "us-east-1"},
        use_listings_cache=False,
    )
    fs.mkdir("fsbucket")
    data = bytes(range(256)) * 1000
    fs.pipe("fsbucket/dir/data.bin", data)
    fs.pipe("fsbucket/dir/sub/x.txt", b"x")
    fs.pipe("fsbucket/top.txt", b"top")
    assert fs.cat("fsbucket/dir/data.bin") == data
    assert fs.cat_file("fsbucket/dir/data.bin", start=1000, end=1010) == data[1000:1010]
    assert fs.cat_file("fsbucket/dir/data.bin", start=-16) == data[-16:]
    with fs.open("fsbucket/dir/data.bin", "rb", block_size=4096) as handle:
        handle.seek(70_000)
        assert handle.read(100) == data[70_000:70_100]
    assert sorted(fs.ls("fsbucket", detail=False)) == ["fsbucket/dir", "fsbucket/top.txt"]
    assert fs.find("fsbucket") == [
        "fsbucket/dir/data.bin",
        "fsbucket/dir/sub/x.txt",
        "fsbucket/top.txt",
    ]
    assert fs.info("fsbucket/dir/data.bin")["size"] == len(data)
    assert (s3server.root / "fsbucket" / "dir" / "sub" / "x.txt").read_bytes() == b"x"
    fs.rm("fsbucket/dir", recursive=True)
    assert fs.find("fsbucket") == ["fsbucket/top.txt"]
    assert not (s3server.root / "fsbucket" / "dir").exists()
    fs.rm("fsbucket", recursive=True)
    assert not fs.exists("fsbucket/top.txt")

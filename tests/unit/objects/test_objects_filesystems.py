"""Which stores count as local (small requests served on the event loop) and which do not."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aifactory.objects.posix.filesystems import LocalTree, tree_is_local
from aifactory.objects.s3.context import Context, Services

_ROOT_EXT4 = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"


def _mountinfo(tmp_path: Path, *extra: str) -> str:
    path = tmp_path / "mountinfo"
    path.write_text(_ROOT_EXT4 + "".join(extra))
    return str(path)


def test_a_tree_on_local_disks_is_local(tmp_path: Path) -> None:
    shm = "30 22 0:25 / /srv/data/scratch rw - tmpfs tmpfs rw\n"
    assert tree_is_local("/srv/data", _mountinfo(tmp_path, shm))


def test_a_network_filesystem_at_or_below_the_root_is_not(tmp_path: Path) -> None:
    below = "31 22 0:40 / /srv/data/shared rw - nfs4 server:/export rw\n"
    assert not tree_is_local("/srv/data", _mountinfo(tmp_path, below))
    lustre = "32 22 0:41 / /srv rw - lustre 10.0.0.1@tcp:/fs rw\n"
    assert not tree_is_local("/srv/data", _mountinfo(tmp_path, lustre))
    beside = "33 22 0:42 / /srv/database rw - nfs4 server:/db rw\n"
    assert tree_is_local("/srv/data", _mountinfo(tmp_path, beside))


def test_escaped_mount_points_and_unreadable_tables(tmp_path: Path) -> None:
    spaced = r"34 22 0:43 / /srv/my\040data rw - fuse.sshfs host:/x rw" + "\n"
    assert not tree_is_local("/srv/my data", _mountinfo(tmp_path, spaced))
    assert tree_is_local("/srv/my", _mountinfo(tmp_path, spaced))
    assert not tree_is_local("/srv/data", str(tmp_path / "absent"))


class _Files:
    def __init__(self, local: LocalTree) -> None:
        self.local = local


def _where_quick_work_runs(mountinfo: str) -> str:
    executor = ThreadPoolExecutor(1)
    files: Any = _Files(LocalTree("/srv/data", mountinfo))
    services = Services(files, None, None, executor, None, None)  # type: ignore[arg-type]
    context = Context(None, None, None, None, None, services, [])  # type: ignore[arg-type]

    async def run() -> str:
        loop_thread = threading.get_ident()
        worker = await context.run_quick(threading.get_ident)
        return "loop" if worker == loop_thread else "pool"

    try:
        return asyncio.run(run())
    finally:
        executor.shutdown()


def test_quick_work_runs_on_the_loop_only_for_a_local_tree(tmp_path: Path) -> None:
    assert _where_quick_work_runs(_mountinfo(tmp_path)) == "loop"
    nfs = "31 22 0:40 / /srv/data rw - nfs4 server:/export rw\n"
    assert _where_quick_work_runs(_mountinfo(tmp_path, nfs)) == "pool"

"""What a workload can reach: run inside a function, an agent or a batch job of a tenant.

``probe(paths)`` tries to read each path (a file's bytes, a folder's listing)
and reports how each try ended, with the identity it ran as. As a script it
prints that report as one JSON line (``PROBE {...}``) and then idles, like a
long-lived agent. Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import time


def probe(paths: list[str]) -> dict[str, object]:
    """Try each path; report the uid, gid, groups and each outcome's exception name."""
    outcomes: dict[str, str] = {}
    for path in paths:
        try:
            if os.path.isdir(path):
                os.listdir(path)
            else:
                with open(path, "rb") as handle:
                    handle.read(1)
            outcomes[path] = "read"
        except OSError as exc:
            outcomes[path] = type(exc).__name__
    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "groups": sorted(os.getgroups()),
        "home": os.environ.get("HOME", ""),
        "control_plane_settings": sorted(k for k in os.environ if k.startswith("AIFACTORY_")),
        "outcomes": outcomes,
    }


def read_text(path: str) -> str:
    """The text of ``path`` (the issue's exploit reads the admin key with this)."""
    with open(path) as handle:
        return handle.read()


if __name__ == "__main__":
    print("PROBE " + json.dumps(probe(sys.argv[1:])), flush=True)
    if os.environ.get("PROBE_IDLE") == "1":
        while True:
            time.sleep(60)

"""What a worker runs for a named function called over HTTP.

The control plane ships this trampoline, not the user's code: it imports
``module:function`` on the worker, calls it with the JSON arguments and
returns a JSON envelope, so the control plane never imports user modules or
unpickles user objects, and a failure reaches the caller as data.
"""

from __future__ import annotations

import importlib
import json
import re
import traceback
from typing import Any

__all__ = ["TARGET_PATTERN", "call_named"]

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
TARGET_PATTERN = re.compile(rf"^{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}(\.{_IDENTIFIER})*$")


def call_named(target: str, arguments: str) -> str:
    """Call ``target`` (``module:function``) with ``{"args": [...], "kwargs": {...}}``.

    Returns:
        ``{"ok": true, "result": ...}``, or ``{"ok": false, "type", "message",
        "traceback"}`` when the import, the call or the JSON encoding failed.
    """
    try:
        module_name, _, attribute = target.partition(":")
        function: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            function = getattr(function, part)
        document = json.loads(arguments)
        result = function(*document.get("args", []), **document.get("kwargs", {}))
        return json.dumps({"ok": True, "result": result})
    except Exception as exc:
        return json.dumps(
            {
                "ok": False,
                "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
                "message": str(exc),
                "traceback": traceback.format_exc(),
            }
        )

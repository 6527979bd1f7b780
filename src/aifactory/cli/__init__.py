"""The client side: the ``aif`` command, its HTTP client, the demo and the status view.

Nothing here runs inside the control plane; it talks to it over HTTP.
"""

from aifactory.cli.main import main

__all__ = ["main"]

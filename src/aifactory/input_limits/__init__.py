"""Input limits of every HTTP listener and every document a client sends, in one place.

::

    bytes on the socket --> HttpLimits (protocol.py, every listener)
                              header block <= max_header_bytes, <= max_headers fields: else 431
                              headers within header_timeout_s; no body stall over
                              body_timeout_s: else 408; connections <= max_connections: else 503
                        --> BodyLimit (bodies.py, per route group): else 413 in the API's format
                        --> parse_json / parse_json_object (documents.py): depth <= 200, else 400
                            parse_yaml: no aliases, depth <= 64, integers <= 32 digits
                              (raises yaml.YAMLError; blocking, so run it in a thread)

Numbers and strings are then range-checked by the pydantic models of each
API (``specs``, the admin API's request models) before they reach the store.
"""

from aifactory.input_limits.bodies import BodyLimit, BodyRule
from aifactory.input_limits.documents import (
    MAX_JSON_DEPTH,
    MAX_YAML_DEPTH,
    MAX_YAML_INTEGER_CHARS,
    parse_json,
    parse_json_object,
    parse_yaml,
)
from aifactory.input_limits.protocol import HttpLimits, uvicorn_options

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_YAML_DEPTH",
    "MAX_YAML_INTEGER_CHARS",
    "BodyLimit",
    "BodyRule",
    "HttpLimits",
    "parse_json",
    "parse_json_object",
    "parse_yaml",
    "uvicorn_options",
]

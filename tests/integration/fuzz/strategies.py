"""Hypothesis strategies for hostile input, and the known hostile inputs of issue 16.

Documents are drawn shaped like what an endpoint expects, each field either
valid or any JSON value, so that most requests get past the first check and
reach the code behind it; a share of bodies is not JSON at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from .wire import Request

Strategy = st.SearchStrategy

# Strings that broke or nearly broke parsers, paths, shells, SQL and templates somewhere.
HOSTILE_STRINGS = (
    "",
    " ",
    "\x00",
    "\n",
    "null",
    "NaN",
    "-1",
    "0x10",
    "1e999",
    "99999999999999d",
    "-5s",
    "..",
    "../../../etc/passwd",
    "/",
    "a/../../b",
    "%00",
    "%2e%2e%2f",
    "${HOME}",
    "$(id)",
    "`id`",
    "'; DROP TABLE tenants; --",
    "{{7*7}}",
    "<?xml?>",
    "\u202e\u0645",
    "\U0001f600",
    "\ufeff",
    "\ud800",
    "a" * 300,
    "A" * 10_000,
)

BIG_NUMBERS = (2**31, 2**63, -(2**63) - 1, 10**30, 10**400, 1e25, 1e308, -1, 0, 0.5)

# Known hostile inputs, exactly as issue 16 lists them.
DEEP_JSON_ARRAY = b"[" * 1000 + b"]" * 1000
DEEP_JSON_OBJECT = b'{"a":' * 1000 + b"1" + b"}" * 1000
BIG_BODY_BYTES = 200 * 1024 * 1024
MANY_HEADERS = 10_000
BIG_HEADER_BYTES = 1024 * 1024
UNTERMINATED_HEADER_BYTES = 40 * 1024 * 1024
HUGE_PROMPT_CHARS = 15 * 1024 * 1024
HUGE_LOGIT_BIAS_ENTRIES = 100_000
LONG_ENGINE_MODEL = "m" * 10_000
HUGE_YAML_INTEGER = "9" * 5000


def yaml_alias_bomb(levels: int = 7, width: int = 10) -> str:
    """A few hundred bytes of YAML that expand ``width ** levels`` times once traversed."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * width)
        lines.append(f"l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + f"\nname: fz-bomb\nmodels: *l{levels - 1}\nengine: *l{levels - 1}\n"


def streamed(total: int, chunk: int = 1024 * 1024) -> Iterator[bytes]:
    """``total`` bytes of ``x`` in chunks: a huge body that never sits in the test's memory."""
    block = b"x" * chunk
    while total > 0:
        yield block[:total]
        total -= chunk


def hostile_text(max_size: int = 30) -> Strategy[str]:
    """Any text, or one of the strings known to break things."""
    # By index: the strategy's repr (printed with each failure) stays short.
    known = st.integers(0, len(HOSTILE_STRINGS) - 1).map(HOSTILE_STRINGS.__getitem__)
    return st.one_of(st.text(max_size=max_size), known)


def numbers() -> Strategy[int | float]:
    """Integers and floats of every size, NaN and infinities included."""
    return st.one_of(st.integers(), st.floats(), st.sampled_from(BIG_NUMBERS))


def json_values(max_leaves: int = 8) -> Strategy[Any]:
    """Any JSON value (Python's JSON: NaN and Infinity too), nested a little."""
    scalars = st.one_of(st.none(), st.booleans(), numbers(), hostile_text())
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(hostile_text(12), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def weighted(*choices: tuple[int, Strategy[Any]]) -> Strategy[Any]:
    """One of the strategies, each as often as its weight says (``one_of`` weighs them alike)."""
    slots = [index for index, (weight, _) in enumerate(choices) for _ in range(weight)]
    return st.sampled_from(slots).flatmap(lambda index: choices[index][1])


@st.composite
def document(
    draw: st.DrawFn,
    required: Mapping[str, Strategy[Any]],
    optional: Mapping[str, Strategy[Any]] | None = None,
    nested: bool = False,
) -> dict[str, Any]:
    """An object shaped like an endpoint's input, with a few fields made hostile.

    Mostly one or two changes to a valid document (a field dropped, set to
    any JSON value, or added), so that each change meets the check meant
    for it; half the documents stay valid (most, ``nested`` in another).
    """
    drawn = draw(st.fixed_dictionaries(dict(required), optional=dict(optional or {})))
    fields = [*required, *(optional or {})]
    changes = draw(st.sampled_from((0, 0, 0, 0, 0, 1) if nested else (0, 0, 1, 2)))
    for _ in range(changes):
        field = draw(st.sampled_from(fields) if fields else hostile_text(12))
        if field in drawn and draw(st.booleans()):
            del drawn[field]
        else:
            drawn[field] = draw(json_values())
    return drawn


def encode(value: Any) -> bytes:
    """JSON as Python writes it (NaN and Infinity included, as a careless client would)."""
    return json.dumps(value).encode()


RAW_BODIES = (
    b"",
    b"{",
    b"null",
    b"[]",
    b'"text"',
    b"\xff\xfe\x00",
    b"{" * 50,
    b'{"a": 1, "a": 2}',
    b"9" * 5000,
    b"1e999999",
    b'{"model": NaN}',
    b"\x00\x00\x00\x00",
)


def json_bodies(documents: Strategy[dict[str, Any]]) -> Strategy[bytes]:
    """Bodies for a JSON endpoint: mostly its documents, some other JSON, some not JSON."""
    return weighted(
        (8, documents.map(encode)),
        (1, json_values().map(encode)),
        (1, st.binary(max_size=64)),
        (1, st.sampled_from(RAW_BODIES)),
    )


def segment(valid: Strategy[str], avoid: frozenset[str] = frozenset()) -> Strategy[str]:
    """A path segment, percent-encoded: a valid value or any text, never one of ``avoid``."""
    drawn = weighted((3, valid), (1, hostile_text())).filter(lambda text: text not in avoid)
    return drawn.map(percent_encoded)


def percent_encoded(text: str) -> str:
    """``text`` fit for a URL, lone surrogates and all (as their UTF-8-like bytes)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def query(params: Mapping[str, Strategy[str]]) -> Strategy[str]:
    """A query string (``?...`` or empty) with some of ``params``, valid or hostile."""

    def render(values: dict[str, str]) -> str:
        pairs = [f"{percent_encoded(k)}={percent_encoded(v)}" for k, v in values.items()]
        return "?" + "&".join(pairs) if pairs else ""

    values = {name: weighted((3, valid), (1, hostile_text())) for name, valid in params.items()}
    return st.fixed_dictionaries({}, optional=values).map(render)


def names(prefix: str = "fz-") -> Strategy[str]:
    """Valid resource names, all under ``prefix`` so they never touch the suite's own."""
    return st.from_regex(rf"{prefix}[a-z0-9-]{{0,12}}", fullmatch=True)


def durations() -> Strategy[Any]:
    """Durations as the API takes them: ``90``, ``"30m"``, ``"1d2h"``, ``"01:00:00"``."""
    return st.one_of(
        st.sampled_from(["30s", "5m", "2h", "1d", "01:00:00", "90", "1d2h3m4s"]),
        st.from_regex(r"[1-9][0-9]{0,3}[dhms]?", fullmatch=True),
        st.integers(1, 10**6),
    )


def latin1(text: str) -> str:
    """``text`` as a header value can carry it: printable Latin-1, no line breaks."""
    return "".join(c for c in text if 0x20 <= ord(c) <= 0xFF and ord(c) != 0x7F)


Headers = tuple[tuple[str, str], ...]


def authorizations(usual: tuple[str, str], *others: tuple[str, str]) -> Strategy[Headers]:
    """Mostly ``usual``; sometimes ``others``, a wrong key, a malformed header or none."""
    wrong = hostile_text().map(lambda text: (("Authorization", "Bearer " + latin1(text)),))
    malformed = hostile_text().map(lambda text: (("Authorization", latin1(text)),))
    return weighted(
        (24, st.just((usual,))),
        *((2, st.just((other,))) for other in others),
        (1, wrong),
        (1, malformed),
        (1, st.just(())),
    )


def with_headers(auth: Strategy[Headers], names: tuple[str, ...]) -> Strategy[Headers]:
    """``auth`` and up to two of the headers ``names``, with hostile values."""
    if not names:
        return auth
    extra = st.lists(st.tuples(st.sampled_from(names), hostile_text().map(latin1)), max_size=2).map(
        tuple
    )
    return st.builds(lambda a, more: (*a, *more), auth, extra)


def http_requests(
    label: str,
    method: str,
    targets: Strategy[str],
    headers: Strategy[Headers],
    bodies: Strategy[bytes] | None = None,
) -> Strategy[Request]:
    """Requests to one route: ``label`` names it in findings."""
    return st.builds(
        lambda target, head, body: Request(label, method, target, head, body),
        targets,
        headers,
        bodies if bodies is not None else st.just(b""),
    )

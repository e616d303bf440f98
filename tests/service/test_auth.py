"""API keys and scopes, index restrictions, key rotation, binding, CORS, ops endpoints and per-key limits."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from foveal.errors import ConfigError
from foveal.service.settings import ServiceSettings

READ = "sk-test-read-0123456789"
WRITE = "sk-test-write-0123456789"
ADMIN = "sk-test-admin-0123456789"
TINY_READ = "sk-test-tiny-read-0123456789"  # read, index tiny only
TINY_ADMIN = "sk-test-tiny-admin-0123456789"  # admin, index tiny only
KEYS = "; ".join([
    f"reader read {READ}",
    f"writer write {WRITE}",
    # the admin key is configured by its digest only
    f"ops admin sha256:{hashlib.sha256(ADMIN.encode()).hexdigest()}",
    f"tiny-reader read {TINY_READ} tiny",
    f"tiny-admin admin {TINY_ADMIN} tiny",
])
JOB = "0123456789abcdef0123456789abcdef"


class Clock:
    """A monotonic clock the test moves by hand (no test waits on real time)."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


ENV = {"api_keys": "FOVEAL_API_KEYS", "api_keys_file": "FOVEAL_API_KEYS_FILE", "open_ops": "FOVEAL_OPEN_OPS",
       "cors_origins": "FOVEAL_CORS_ORIGINS", "rate_limit_rps": "FOVEAL_RATE_LIMIT_RPS",
       "max_agent_runs": "FOVEAL_MAX_AGENT_RUNS"}


@pytest.fixture()
def make_app(engine, monkeypatch):
    """``make_app(api_keys=..., ...)``: the app as an operator configures it, through the environment."""
    from foveal.api.app import create_app

    def make(**settings):
        for field, variable in ENV.items():
            monkeypatch.delenv(variable, raising=False)
        for field, value in settings.items():
            monkeypatch.setenv(ENV[field], "1" if value is True else str(value))
        return create_app(engine, settings=ServiceSettings.from_env())

    return make


@pytest.fixture()
def client(make_app, tiny):
    with TestClient(make_app(api_keys=KEYS)) as c:
        yield c


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


# -- key entries -------------------------------------------------------------------------------------------------
def test_key_entries_parse_hash_and_refuse_clearly(tmp_path):
    from foveal.api.auth import KeyRing, parse_keys

    keys = parse_keys("# comment\n\nci read,write sk-live-abc123 papers,notes\n"
                      f"ops ADMIN sha256:{'AB' * 32}\nall read other-secret-value *\n", "keys.txt")
    assert [k.name for k in keys] == ["ci", "ops", "all"]
    assert keys[0].scopes == {"read", "write"} and keys[0].indexes == {"papers", "notes"}
    assert keys[0].digest == hashlib.sha256(b"sk-live-abc123").digest()  # hashed at load
    assert keys[1].scopes == {"read", "write", "admin"} and keys[1].digest == bytes.fromhex("ab" * 32)
    assert keys[2].indexes is None
    assert "sk-live" not in repr(keys)
    ring = KeyRing("a read secret-number-one; b write secret-number-two")
    assert ring.enabled and ring.lookup("secret-number-two").name == "b" and ring.lookup("secret-number") is None
    assert not KeyRing("").enabled

    for text, fragment in [
        ("ci read", "NAME SCOPES SECRET"),
        ("ci read,delete sk-very-secret-1", "allowed: read, write, admin"),
        ("c/i read sk-very-secret-1", "key name"),
        ("ci read sha256:abc", "64 hex digits"),
        ("ci read sk-very-secret-1 Bad/Index", "INDEXES"),
        ("ci read sk-very-secret-1 a b", "NAME SCOPES SECRET"),
        ("ci read sk-very-secret-1; ci write sk-very-secret-2", "unique"),
        ("a read sk-very-secret-1; b write sk-very-secret-1", "same secret"),
    ]:
        with pytest.raises(ConfigError) as info:
            KeyRing(text)
        assert fragment in info.value.message and "sk-very-secret" not in info.value.message, text
    with pytest.raises(ConfigError, match="FOVEAL_API_KEYS_FILE"):
        KeyRing("", tmp_path / "missing")


def test_bad_key_settings_refuse_to_create_the_app(make_app, monkeypatch):
    with pytest.raises(ConfigError, match="scopes"):
        make_app(api_keys="ci reed sk-very-secret-1")
    monkeypatch.setenv("FOVEAL_RATE_LIMIT_RPS", "fast")
    with pytest.raises(ConfigError, match="FOVEAL_RATE_LIMIT_RPS"):
        ServiceSettings.from_env()
    monkeypatch.setenv("FOVEAL_RATE_LIMIT_RPS", "2.5")
    monkeypatch.setenv("FOVEAL_API_KEYS", "ci read sk-very-secret-1")
    monkeypatch.setenv("FOVEAL_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("FOVEAL_OPEN_OPS", "1")
    settings = ServiceSettings.from_env()
    assert settings.rate_limit_rps == 2.5 and settings.open_ops and settings.max_agent_runs == 2
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert "sk-very-secret" not in repr(settings)
    monkeypatch.setenv("FOVEAL_OPEN_OPS", "maybe")
    with pytest.raises(ConfigError, match="FOVEAL_OPEN_OPS"):
        ServiceSettings.from_env()


# -- authentication and scopes -----------------------------------------------------------------------------------
ROUTES = [  # method, path, body, the scope it needs
    ("get", "/v1/indexes", None, "read"),
    ("get", "/v1/indexes/tiny", None, "read"),
    ("post", "/v1/indexes/tiny/search", {"query": "bread", "pipeline": "bm25"}, "read"),
    ("get", "/v1/indexes/tiny/documents/tides", None, "read"),
    ("post", "/v1/agent/ask", {"question": "x?", "index": "nope"}, "read"),
    ("post", "/v1/indexes/tiny/documents", {"documents": [{"_id": "n", "text": "new"}]}, "write"),
    ("delete", "/v1/indexes/tiny/documents/nope", None, "write"),
    ("get", f"/v1/jobs/{JOB}", None, "write"),
    ("post", "/v1/indexes", {"name": "fresh"}, "admin"),
    ("delete", "/v1/indexes/nope", None, "admin"),
    ("get", "/metrics", None, "read"),
    ("get", "/v1/indexes/tiny/events", None, "read"),
    ("get", "/v1/indexes/tiny/events/nope", None, "read"),
    ("post", "/v1/indexes/tiny/events", {"events": [{"_id": "e", "title": "x", "timestamp": "2024-01-01"}]}, "write"),
    ("delete", "/v1/indexes/tiny/events/nope", None, "write"),
]
SECRETS = {"read": READ, "write": WRITE, "admin": ADMIN}


def _call(client, method, path, body, headers=None):
    return getattr(client, method)(path, headers=headers or {}, **({"json": body} if body is not None else {}))


@pytest.mark.parametrize("method, path, body, scope", ROUTES)
def test_every_route_needs_a_key_with_its_scope(client, method, path, body, scope):
    refused = [({}, "missing"), (bearer("sk-wrong-key-0123456"), "wrong"), ({"X-API-Key": "sk-wrong-key-0123456"},
               "wrong"), ({"Authorization": f"Basic {READ}"}, "basic")]
    for headers, why in refused:
        response = _call(client, method, path, body, headers)
        assert response.status_code == 401, (why, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        error = response.json()["error"]
        assert error["type"] == "AuthenticationError"
        assert ("not valid" if why == "wrong" else "required") in error["message"]
    for have, secret in SECRETS.items():
        for headers in (bearer(secret), {"X-API-Key": secret}):
            response = _call(client, method, path, body, headers)
            allowed = have == scope or have == "admin"
            if allowed:
                assert response.status_code not in (401, 403), (have, response.text)
            else:
                assert response.status_code == 403, (have, response.text)
                error = response.json()["error"]
                assert error["type"] == "PermissionDeniedError" and repr(scope) in error["message"]


def test_a_request_without_a_key_is_refused_before_its_body_is_read(client):
    for headers in ({}, bearer("sk-wrong-key-0123456")):
        response = client.post("/v1/indexes/tiny/documents", content=b'{"documents": [' + b"1," * 1000,
                               headers=headers | {"content-type": "application/json"})
        assert response.status_code == 401, response.text  # not the parser's 422
        assert client.get("/v1/no-such-route", headers=headers).status_code == 401
    assert client.get("/v1/no-such-route", headers=bearer(READ)).status_code == 404
    response = client.post("/v1/indexes/tiny/documents", content=b"{", headers=bearer(WRITE) | {
        "content-type": "application/json"})
    assert response.status_code == 422


def test_the_request_state_carries_the_key(make_app, tiny):
    from foveal.api.auth import require, shows_ops_details

    app = make_app(api_keys=KEYS)

    @app.get("/whoami", dependencies=[Depends(require("read"))])
    def whoami(request: Request) -> dict:
        return {"name": request.state.key_name, "scopes": sorted(request.state.scopes)}

    with TestClient(app) as c:
        assert c.get("/whoami", headers=bearer(READ)).json() == {"name": "reader", "scopes": ["read"]}
        assert c.get("/whoami", headers={"X-API-Key": ADMIN}).json() == {"name": "ops",
                                                                           "scopes": ["admin", "read", "write"]}
    # what /readyz does with FOVEAL_OPEN_OPS: details shown, yet a caller without a key has no scopes, so code
    # that hides exception text from non-admins (request.state.scopes) hides it
    ops_app = make_app(api_keys=KEYS, open_ops=True)
    for headers, scopes in [([], set()), ([(b"x-api-key", ADMIN.encode())], {"admin", "read", "write"})]:
        request = Request({"type": "http", "method": "GET", "path": "/readyz", "headers": headers, "app": ops_app,
                           "query_string": b""})
        assert shows_ops_details(request) and request.state.scopes == scopes
    open_app = make_app()
    open_app.get("/whoami", dependencies=[Depends(require("admin"))])(whoami)
    with TestClient(open_app) as c:  # no keys: open, all scopes
        assert c.get("/whoami").json() == {"name": "anonymous", "scopes": ["admin", "read", "write"]}


def test_a_key_limited_to_indexes_reaches_only_those(client, engine):
    engine.create_index("other")
    tiny_read, tiny_admin = bearer(TINY_READ), bearer(TINY_ADMIN)
    assert client.post("/v1/indexes/tiny/search", json={"query": "bread", "pipeline": "bm25"},
                       headers=tiny_read).status_code == 200
    for method, path, body in [
        ("post", "/v1/indexes/other/search", {"query": "bread", "pipeline": "bm25"}),
        ("get", "/v1/indexes/other", None),
        ("get", "/v1/indexes/other/documents/x", None),
        ("post", "/v1/agent/ask", {"question": "why?", "index": "other"}),
    ]:
        response = _call(client, method, path, body, tiny_read)
        assert response.status_code == 403 and "'other'" in response.json()["error"]["message"], path
    assert [i["name"] for i in client.get("/v1/indexes", headers=tiny_read).json()] == ["tiny"]
    assert {i["name"] for i in client.get("/v1/indexes", headers=bearer(READ)).json()} == {"tiny", "other"}
    # an admin key limited to tiny neither creates nor deletes another index, nor follows its jobs
    assert client.post("/v1/indexes", json={"name": "fresh"}, headers=tiny_admin).status_code == 403
    assert client.delete("/v1/indexes/other", headers=tiny_admin).status_code == 403
    job = client.post("/v1/indexes/other/documents", json={"documents": [{"_id": "a", "text": "x"}]},
                      headers=bearer(ADMIN)).json()["job_id"]
    assert client.get(f"/v1/jobs/{job}", headers=tiny_admin).status_code == 403
    assert client.get(f"/v1/jobs/{job}", headers=bearer(WRITE)).status_code == 200
    assert client.delete("/v1/indexes/tiny/documents/tides", headers=tiny_admin).json() == {"deleted": "tides"}
    assert set(engine.list_indexes()) == {"tiny", "other"}


def test_every_route_declares_a_scope(make_app):
    """A route added later without ``require`` fails here (the ops and docs routes are the listed exceptions)."""
    app = make_app()
    from foveal.api.web import PUBLIC_PATHS

    public = {"/healthz", "/readyz", *PUBLIC_PATHS}  # the web page and the docs: their API calls take keys
    for route in app.routes:
        if not isinstance(route, APIRoute) or route.path in public:
            continue
        scopes = [d.call.scope for d in route.dependant.dependencies if hasattr(d.call, "scope")]
        assert scopes, f"{route.path} declares no scope"


def test_openapi_declares_the_schemes_per_operation(make_app):
    schema = make_app().openapi()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": schemes["bearer"]["description"]}
    assert schemes["apiKey"]["in"] == "header" and schemes["apiKey"]["name"] == "X-API-Key"
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if path == "/healthz":
                assert "security" not in operation, path
            elif path == "/readyz":  # a key is optional: it shows the checks to an admin
                assert operation["security"] == [{}, {"bearer": []}, {"apiKey": []}]
            else:
                assert operation["security"] == [{"bearer": []}, {"apiKey": []}], (method, path)
                # the refusals a key can meet are declared (a schema-driven run meets no undeclared status)
                assert {"401", "403", "429"} <= set(operation["responses"]), (method, path)


# -- rotation ----------------------------------------------------------------------------------------------------
def test_keys_rotate_without_a_restart(make_app, tiny, tmp_path):
    path = tmp_path / "api-keys"
    path.write_text(f"# rotated by hand\nold read {READ}\n")
    with TestClient(make_app(api_keys_file=str(path))) as c:
        ring = c.app.state.keyring
        clock = ring.clock = Clock()
        new = "sk-test-new-0123456789-longer"
        assert c.get("/v1/indexes", headers=bearer(READ)).status_code == 200
        path.write_text(f"new read,write {new}\n")  # adds a key, removes the old one
        os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        # looked at no more than once a second: the old key still holds until the clock moves
        assert c.get("/v1/indexes", headers=bearer(READ)).status_code == 200
        clock.now += 1.0
        assert c.get("/v1/indexes", headers=bearer(READ)).status_code == 401
        assert c.get("/v1/indexes", headers=bearer(new)).status_code == 200
        # a broken file keeps the keys in force (logged), and so does a missing one
        path.write_text("half-written")
        clock.now += 1.0
        assert c.get("/v1/indexes", headers=bearer(new)).status_code == 200
        path.unlink()
        clock.now += 1.0
        assert c.get("/v1/indexes", headers=bearer(new)).status_code == 200
        # every key removed: closed, never open
        path.write_text("# nobody\n")
        clock.now += 1.0
        assert c.get("/v1/indexes", headers=bearer(new)).status_code == 401
        assert c.get("/v1/indexes").status_code == 401


# -- binding -----------------------------------------------------------------------------------------------------
def test_serve_refuses_an_open_api_off_loopback(home, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from foveal.cli import app as cli

    served: list[str] = []
    monkeypatch.setattr(uvicorn, "run", lambda application, host, port, **_: served.append(host))
    for name in ("FOVEAL_API_KEYS", "FOVEAL_API_KEYS_FILE", "FOVEAL_ALLOW_OPEN"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        result = runner.invoke(cli, ["serve", "--host", host])
        assert result.exit_code == 2, result.output
        assert "without API keys" in result.output and "FOVEAL_ALLOW_OPEN" in result.output
    assert served == []
    for host in ("127.0.0.1", "localhost", "::1"):  # the two-command start stays open
        assert runner.invoke(cli, ["serve", "--host", host]).exit_code == 0
    monkeypatch.setenv("FOVEAL_API_KEYS", f"ci read {READ}")
    assert runner.invoke(cli, ["serve", "--host", "0.0.0.0"]).exit_code == 0
    monkeypatch.delenv("FOVEAL_API_KEYS")
    monkeypatch.setenv("FOVEAL_ALLOW_OPEN", "1")
    assert runner.invoke(cli, ["serve", "--host", "0.0.0.0"]).exit_code == 0
    assert served == ["127.0.0.1", "localhost", "::1", "0.0.0.0", "0.0.0.0"]
    monkeypatch.setenv("FOVEAL_API_KEYS", "ci read")  # a malformed entry: refused at start, the secret not echoed
    result = runner.invoke(cli, ["serve", "--host", "127.0.0.1"])
    assert result.exit_code == 2 and "NAME SCOPES SECRET" in result.output and len(served) == 5


# -- CORS --------------------------------------------------------------------------------------------------------
def test_cors_is_closed_by_default_and_follows_the_allow_list(make_app, tiny):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    with TestClient(make_app(api_keys=KEYS)) as c:
        response = c.options("/v1/indexes/tiny/search", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
        response = c.get("/v1/indexes", headers=bearer(READ) | {"Origin": "https://app.example"})
        assert response.status_code == 200 and "access-control-allow-origin" not in response.headers
    with TestClient(make_app(api_keys=KEYS, cors_origins="https://app.example")) as c:
        response = c.options("/v1/indexes/tiny/search", headers=preflight)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in response.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in response.headers
        refused = c.options("/v1/indexes/tiny/search", headers=preflight | {"Origin": "https://evil.example"})
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
        response = c.get("/v1/indexes", headers=bearer(READ) | {"Origin": "https://app.example"})
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        # a refusal still carries the header, so the browser shows the client the 401
        response = c.get("/v1/indexes", headers={"Origin": "https://app.example"})
        assert response.status_code == 401 and response.headers["access-control-allow-origin"] == "https://app.example"


# -- ops endpoints -----------------------------------------------------------------------------------------------
def test_healthz_open_readyz_status_only_metrics_need_a_key(make_app, tiny):
    with TestClient(make_app(api_keys=KEYS)) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").json() == {"status": "ready"}
        assert c.get("/readyz", headers=bearer(READ)).json() == {"status": "ready"}
        assert c.get("/readyz", headers=bearer(TINY_ADMIN)).json() == {"status": "ready"}
        assert c.get("/readyz", headers=bearer(ADMIN)).json()["checks"]["index:tiny"] == "ok"
        assert c.get("/readyz", headers=bearer("sk-wrong-key-0123456")).status_code == 401
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=bearer(WRITE)).status_code == 403
        assert c.get("/metrics", headers=bearer(TINY_READ)).status_code == 403  # its series name every index
        assert "foveal_index_documents" in c.get("/metrics", headers=bearer(READ)).text
    with TestClient(make_app(api_keys=KEYS, open_ops=True)) as c:
        assert c.get("/readyz").json()["checks"]["index:tiny"] == "ok"
        assert c.get("/readyz", headers=bearer("sk-wrong-key-0123456")).status_code == 401
        assert c.get("/metrics").status_code == 200
        assert c.get("/v1/indexes").status_code == 401  # only the ops endpoints open
    with TestClient(make_app()) as c:  # no keys (loopback): everything shown
        assert c.get("/readyz").json()["checks"]["index:tiny"] == "ok"
        assert c.get("/metrics").status_code == 200


# -- per-key limits ----------------------------------------------------------------------------------------------
def test_requests_per_second_per_key(make_app, tiny):
    with TestClient(make_app(api_keys=KEYS, rate_limit_rps=1)) as c:
        clock = c.app.state.rate_limiter.clock = Clock()
        answers = [c.get("/v1/indexes", headers=bearer(READ)) for _ in range(6)]
        assert [r.status_code for r in answers] == [200, 200, 429, 429, 429, 429]  # a burst of 2 x rate
        error = answers[-1].json()["error"]
        assert error["type"] == "RateLimitedError" and "FOVEAL_RATE_LIMIT_RPS" in error["message"]
        assert answers[-1].headers["retry-after"] == "1" and error["details"]["retry_after"] == 1
        assert c.get("/v1/indexes", headers=bearer(ADMIN)).status_code == 200  # another key has its own bucket
        clock.now += 1.0
        assert c.get("/v1/indexes", headers=bearer(READ)).status_code == 200
        assert c.get("/v1/indexes", headers=bearer(READ)).status_code == 429
    with TestClient(make_app(api_keys=KEYS)) as c:  # off by default
        assert all(c.get("/v1/indexes", headers=bearer(READ)).status_code == 200 for _ in range(10))


def test_concurrent_agent_runs_per_key(make_app, tiny):
    body = {"question": "How does yeast make bread rise?", "index": "tiny"}
    with TestClient(make_app(api_keys=KEYS, max_agent_runs=2)) as c:
        runs = c.app.state.agent_runs
        held = [runs.acquire("reader"), runs.acquire("reader")]  # two runs of this key are going
        response = c.post("/v1/agent/ask", json=body, headers=bearer(READ))
        assert response.status_code == 429 and "FOVEAL_MAX_AGENT_RUNS" in response.json()["error"]["message"]
        assert response.headers["retry-after"]
        with c.stream("POST", "/v1/agent/ask", json=body, headers=bearer(ADMIN)) as other:  # another key runs
            assert other.status_code == 200 and runs.running("ops") == 1
            assert "event: final" in other.read().decode()
        for release in held:
            release()
        with c.stream("POST", "/v1/agent/ask", json=body, headers=bearer(READ)) as ok:
            assert ok.status_code == 200
            ok.read()
        assert runs.running("reader") == runs.running("ops") == 0  # every finished run gave its slot back

"""Property-based run over the app's own OpenAPI document, once per key: no key, a read key, a write key, an admin
key (schemathesis draws the requests, hypothesis drives them; the app runs in-process with its lifespan).

What every request must satisfy:

* no 5xx, whatever was sent;
* no 2xx without the scope the route needs (``REQUIRED``): the keyless client reaches only ``/healthz`` and the
  status of ``/readyz``, the read key never writes, the write key never administers; ``/readyz`` shows its checks
  only to the admin key;
* a refused request (any 4xx) changes nothing: the index list and each index's document count and change-log
  position (``store.max_seq()``) are the same after it as before.

``FOVEAL_FUZZ_EXAMPLES`` (default 300) generated requests go to every operation for every key; the path's index
name is sometimes replaced by the live index ``tiny`` and the job id by a real job, so that a scope leak would
actually reach data. A stateful run (``FOVEAL_FUZZ_STATEFUL`` sequences, default 100, of up to 25 steps) follows
the links create index -> post documents -> get job -> search with a key drawn for every step. Ingest runs only
when the machine says so (``FOVEAL_EMBEDDED_WORKERS=0``, then ``run_one``), so nothing changes behind a check.
Runs are derandomized (the same requests in CI every time) and print how many requests they sent."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

EXAMPLES = int(os.environ.get("FOVEAL_FUZZ_EXAMPLES", "300"))
STATEFUL = int(os.environ.get("FOVEAL_FUZZ_STATEFUL", "100"))

SECRETS = {"read": "sk-fuzz-read-0123456789", "write": "sk-fuzz-write-0123456789",
           "admin": "sk-fuzz-admin-0123456789", "scoped": "sk-fuzz-scoped-0123456789"}
#: ``scoped`` reads and writes one index, ``papers``, which never exists here: any 2xx that names an index is a leak.
KEYS = ("fuzz-read read sk-fuzz-read-0123456789; fuzz-write write sk-fuzz-write-0123456789; "
        "fuzz-admin admin sk-fuzz-admin-0123456789; fuzz-scoped read,write sk-fuzz-scoped-0123456789 papers")
SCOPED_TO = "papers"
#: What each client holds (admin implies read and write; write does not imply read).
SCOPES = {None: frozenset(), "read": frozenset({"read"}), "write": frozenset({"write"}),
          "admin": frozenset({"read", "write", "admin"}), "scoped": frozenset({"read", "write"})}

#: The scope a 2xx needs, per operation; None: open. An operation missing here is taken to need admin (strictest).
REQUIRED = {
    "GET /healthz": None,
    "GET /readyz": None,  # the status only; its checks need admin (asserted apart)
    "GET /metrics": "read",
    "GET /v1/indexes": "read",
    "GET /v1/indexes/{name}": "read",
    "POST /v1/indexes/{name}/search": "read",
    "GET /v1/indexes/{name}/documents/{doc_id}": "read",
    "POST /v1/indexes/{name}/documents/_get": "read",
    "POST /v1/agent/ask": "read",
    "POST /v1/indexes/{name}/documents": "write",
    "DELETE /v1/indexes/{name}/documents/{doc_id}": "write",
    "POST /v1/indexes/{name}/documents/_delete": "write",
    "GET /v1/jobs/{job_id}": "write",
    "GET /v1/jobs": "write",
    "GET /v1/indexes/{name}/documents": "read",
    "POST /v1/indexes/{name}/documents/_export": "read",
    "POST /v1/indexes/{name}/documents/_delete_by_filter": "write",
    "POST /v1/indexes/{name}/documents/_update": "write",
    "GET /v1/aliases": "read",
    "PUT /v1/aliases/{alias}": "admin",
    "DELETE /v1/aliases/{alias}": "admin",
    "POST /v1/indexes/{name}/events": "write",
    "GET /v1/indexes/{name}/events": "read",
    "GET /v1/indexes/{name}/events/{event_id}": "read",
    "DELETE /v1/indexes/{name}/events/{event_id}": "write",
    "POST /v1/indexes": "admin",
    "DELETE /v1/indexes/{name}": "admin",
}

HYPOTHESIS = dict(deadline=None, derandomize=True, database=None, print_blob=False,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                         HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])


def headers_for(key: str | None) -> dict[str, str]:
    """The write key is sent as ``X-API-Key``, the others as ``Authorization: Bearer`` (both are accepted)."""
    if key is None:
        return {}
    if key == "write":
        return {"X-API-Key": SECRETS[key]}
    return {"Authorization": f"Bearer {SECRETS[key]}"}


def state_of(engine) -> tuple:
    """What a refused request must leave alone: the indexes, and per index its document count and change-log
    position (read from the engine, not over HTTP, so that no request of the check can itself be refused)."""
    rows = []
    for name in sorted(engine.list_indexes()):
        try:
            store = engine.get(name).store
            rows.append((name, store.count(), store.max_seq()))
        except Exception as exc:  # noqa: BLE001 - a damaged index is part of the state too
            rows.append((name, type(exc).__name__))
    return tuple(rows)


class Harness:
    """One served app; sends a schemathesis case with a key, checks the invariants, counts what it sent."""

    def __init__(self, client, engine) -> None:
        self.client = client
        self.engine = engine
        self.sent: Counter = Counter()
        self.statuses: Counter = Counter()

    def send(self, case, key: str | None, label: str | None = None):
        label = label or f"{case.method.upper()} {case.path}"
        kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers_for(key))
        kwargs.pop("cookies", None)
        # a generated header may carry another key: the key under test is the only one this client sends
        headers = {k: v for k, v in (kwargs.pop("headers", None) or {}).items()
                   if k.lower() not in ("user-agent", "authorization", "x-api-key")}
        headers.update(headers_for(key))
        before = state_of(self.engine)
        response = self.client.request(kwargs.pop("method"), kwargs.pop("url"), headers=headers,
                                       params=kwargs.pop("params", None), json=kwargs.pop("json", None),
                                       content=kwargs.pop("data", None) or kwargs.pop("content", None))
        self.sent[(key, label)] += 1
        self.statuses[(key, response.status_code)] += 1
        shown = (f"{key or 'no key'}: {case.method.upper()} {case.formatted_path} params={case.query!r} "
                 f"body={_short(case.body)} -> {response.status_code} {response.text[:500]}")
        assert response.status_code < 500, shown
        if 200 <= response.status_code < 300:
            needed = REQUIRED.get(label, "admin")
            assert needed is None or needed in SCOPES[key], f"scope leak ({needed} needed): {shown}"
            if label == "GET /readyz":
                assert ("checks" in response.json()) == (key == "admin"), f"readyz details: {shown}"
            if key == "scoped":
                assert self.indexes_named(case, response) <= {SCOPED_TO}, f"index leak: {shown}"
                assert label != "GET /metrics", f"ops data for a key limited to some indexes: {shown}"
        elif 400 <= response.status_code < 500:
            assert state_of(self.engine) == before, f"a refused request changed state: {shown}"
        return response

    @staticmethod
    def indexes_named(case, response) -> set[str]:
        """The indexes a 2xx answer reaches: named in the path or body, or (job, listing) in the answer."""
        named = set()
        if case.path_parameters and "name" in case.path_parameters:
            named.add(str(case.path_parameters["name"]))
        if isinstance(case.body, dict) and isinstance(case.body.get("index"), str):
            named.add(case.body["index"])
        try:
            data = response.json()
        except ValueError:
            return named
        if isinstance(data, dict) and isinstance(data.get("index"), str):
            named.add(data["index"])
        if isinstance(data, list):
            named |= {row.get("name") for row in data if isinstance(row, dict)}
        return named

    def report(self, title: str) -> str:
        total = sum(self.sent.values())
        per_key = Counter()
        for (key, _label), n in self.sent.items():
            per_key[key or "no key"] += n
        statuses = Counter()
        for (key, status), n in self.statuses.items():
            statuses[f"{key or 'no key'} {status}"] += n
        text = f"{title}: {total} requests; per key {dict(per_key)}; statuses {dict(sorted(statuses.items()))}"
        print(text)
        return text


def _short(body) -> str:
    try:
        text = json.dumps(body)
    except TypeError:
        text = repr(body)
    return text if len(text) < 400 else text[:400] + f"...({len(text)} chars)"


@pytest.fixture()
def served(engine, tiny, monkeypatch):
    """The app with the three keys configured, its queue started (no worker threads) and a real job queued."""
    from starlette.testclient import TestClient

    from foveal.api.app import create_app
    from foveal.service.settings import ServiceSettings

    monkeypatch.setenv("FOVEAL_API_KEYS", KEYS)
    monkeypatch.setenv("FOVEAL_EMBEDDED_WORKERS", "0")
    monkeypatch.setenv("FOVEAL_MAX_BATCH_DOCS", "20")
    monkeypatch.setenv("FOVEAL_MAX_DOC_BYTES", "20000")
    app = create_app(engine, settings=ServiceSettings.from_env())
    with TestClient(app, raise_server_exceptions=False) as client:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        job = client.post("/v1/indexes/tiny/documents", headers=headers_for("admin"),
                          json={"documents": [{"_id": "fuzz-seed", "text": "a seed document"}]})
        assert job.status_code == 202, job.text
        yield Harness(client, engine), schema, app, job.json()["job_id"]


def cases_for(operation):
    """Valid requests and, half of the time, requests that break the schema (schemathesis's negative mode: wrong
    types, out-of-range numbers, missing fields), which is where the 5xx were."""
    positive = operation.as_strategy()
    try:
        return st.one_of(positive, operation.as_strategy(GenerationMode.NEGATIVE))
    except Exception:  # noqa: BLE001 - an operation with nothing to break (no parameters, no body)
        return positive


def _operations(schema):
    for result in schema.get_all_operations():
        yield result.ok()


@pytest.mark.parametrize("key", [None, "read", "write", "admin"], ids=["no-key", "read", "write", "admin"])
def test_every_operation_per_key(served, key):
    """EXAMPLES generated requests per operation with this key: no 5xx, no scope leak, refusals change nothing."""
    harness, schema, _app, job_id = served
    labels = []
    for operation in _operations(schema):
        label = f"{operation.method.upper()} {operation.path}"
        labels.append(label)
        # the admin key may delete what it names: let it delete generated names, not the index the rest probe
        live = [None] if label == "DELETE /v1/indexes/{name}" and key == "admin" else [None, "tiny"]

        @given(case=cases_for(operation), name=st.sampled_from(live), doc=st.sampled_from([None, "tides"]),
               job=st.sampled_from([None, job_id]))
        @settings(max_examples=EXAMPLES, **HYPOTHESIS)
        def check(case, name, doc, job):
            params = case.path_parameters
            if params is not None:
                if name and "name" in params:
                    params["name"] = name
                if doc and "doc_id" in params:
                    params["doc_id"] = doc
                if job and "job_id" in params:
                    params["job_id"] = job
            harness.send(case, key, label)

        check()
    assert "POST /v1/indexes/{name}/documents" in labels and "GET /v1/jobs/{job_id}" in labels
    unknown = sorted(set(labels) - set(REQUIRED))
    harness.report(f"per-operation fuzz, {key or 'no key'}, {EXAMPLES} examples per operation, "
                   f"{len(labels)} operations{' (taken as admin-only: ' + ', '.join(unknown) + ')' if unknown else ''}")


def test_stateful_links_with_every_key(served):
    """Sequences that follow the links create index -> post documents -> get job -> search (and get / delete a
    document, delete an index), each step sent with a key drawn from the four and a read-write key limited to an
    index that does not exist (``scoped``: it must never reach another index, its jobs or the ops data); the
    harness checks every step."""
    harness, schema, app, seed_job = served
    ops = {f"{o.method.upper()} {o.path}": o for o in _operations(schema)}
    keys = st.sampled_from([None, "read", "write", "admin", "scoped"])
    names = st.from_regex(r"\A[a-z][a-z0-9]{0,6}\Z")

    class Links(RuleBasedStateMachine):
        indexes = Bundle("indexes")
        jobs = Bundle("jobs")
        ids = Bundle("ids")

        @initialize(target=indexes)
        def live(self):
            return "tiny"

        @rule(target=indexes, key=keys, name=names, case=ops["POST /v1/indexes"].as_strategy(),
              generated=st.booleans())
        def create_index(self, key, name, case, generated):
            if not generated:  # a body that is valid, so that the link is followed; else whatever the schema allows
                case.body = {"name": name}
            response = harness.send(case, key, "POST /v1/indexes")
            return case.body.get("name") if response.status_code == 201 else "tiny"

        @rule(target=jobs, key=keys, index=indexes, case=ops["POST /v1/indexes/{name}/documents"].as_strategy(),
              doc_id=st.text(min_size=1, max_size=12), generated=st.booleans())
        def post_documents(self, key, index, case, doc_id, generated):
            case.path_parameters["name"] = index
            if not generated:
                case.body = {"documents": [{"_id": doc_id, "text": f"about {doc_id}"}]}
            response = harness.send(case, key, "POST /v1/indexes/{name}/documents")
            return response.json()["job_id"] if response.status_code == 202 else seed_job

        @rule(key=keys, job=jobs)
        def get_job(self, key, job):
            case = ops["GET /v1/jobs/{job_id}"].Case(path_parameters={"job_id": job})
            harness.send(case, key, "GET /v1/jobs/{job_id}")

        @rule()
        def ingest(self):
            """The worker runs one queued batch here, between requests (never behind a check)."""
            app.state.queue.run_one(app.state.engine)

        @rule(key=keys, index=indexes, case=ops["POST /v1/indexes/{name}/search"].as_strategy(),
              query=st.text(min_size=1, max_size=20), generated=st.booleans())
        def search(self, key, index, case, query, generated):
            case.path_parameters["name"] = index
            if not generated:
                case.body = {"query": query}
            harness.send(case, key, "POST /v1/indexes/{name}/search")

        @rule(key=keys, index=indexes, doc_id=st.sampled_from(["tides", "bread"]), delete=st.booleans())
        def document(self, key, index, doc_id, delete):
            label = ("DELETE" if delete else "GET") + " /v1/indexes/{name}/documents/{doc_id}"
            case = ops[label].Case(path_parameters={"name": index, "doc_id": doc_id})
            harness.send(case, key, label)

        @rule(key=keys, index=indexes)
        def delete_index(self, key, index):
            if index == "tiny":
                return
            case = ops["DELETE /v1/indexes/{name}"].Case(path_parameters={"name": index})
            harness.send(case, key, "DELETE /v1/indexes/{name}")

    run_state_machine_as_test(Links, settings=settings(max_examples=STATEFUL, stateful_step_count=25,
                                                       **HYPOTHESIS))
    harness.report(f"stateful links, {STATEFUL} sequences")

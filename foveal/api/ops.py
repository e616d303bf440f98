"""Operational endpoints: ``/readyz`` (every backend this process needs answers) and ``/metrics`` (Prometheus).

Metrics: ``foveal_http_requests_total`` and ``foveal_http_request_duration_seconds`` by method, route template and
status; ``foveal_stage_seconds{stage}`` (one histogram per search and agent stage, :mod:`foveal.pipeline.timing`);
``foveal_ingest_documents_total{outcome}`` (accepted, indexed, failed), ``foveal_ingest_task_retries_total``,
``foveal_documents_indexed_total``; ``foveal_jobs{state}``; ``foveal_queue_depth{queue}`` (tasks not yet done);
``foveal_index_documents|passages|vectors|bytes{index}``; ``foveal_query_batches_total{index}`` and
``foveal_query_batch_items_total{index}`` (micro-batches of searches and the searches they held).
``deploy/grafana-dashboard.json`` charts them.
"""

from __future__ import annotations

import os
import time

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from foveal.api.auth import OPTIONAL_SECURITY, require, shows_ops_details
from foveal.errors import IndexDamagedError

router = APIRouter()


class _QueueCollector:
    """Series read at scrape time: jobs, queue depth per queue, ingest counters, index sizes."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self):
        state = self.app.state
        queue = getattr(state, "queue", None)
        engine = getattr(state, "engine", None)
        if queue is not None:
            try:
                stats = queue.stats()
            except Exception:  # a scrape must not fail because Redis is away; readyz reports that
                stats = None
            if stats is not None:
                jobs = GaugeMetricFamily("foveal_jobs", "Ingest jobs by state (within retention).", labels=["state"])
                for name, count in stats["jobs"].items():
                    jobs.add_metric([name], count)
                yield jobs
                depth = GaugeMetricFamily("foveal_queue_depth", "Ingest tasks not yet done, per queue.",
                                          labels=["queue"])
                for name, count in (stats.get("queues") or {getattr(queue, "kind", "ingest"): stats["queue_depth"]}
                                    ).items():
                    depth.add_metric([name], count)
                yield depth
                yield CounterMetricFamily("foveal_documents_indexed", "Documents indexed through the queue.",
                                          value=stats["documents_indexed"])
                ingest = CounterMetricFamily(
                    "foveal_ingest_documents", "Documents through the ingest queue by outcome: accepted (queued), "
                    "indexed, failed (refused on sight or by a worker).", labels=["outcome"])
                counters = stats.get("ingest") or {}
                for outcome in ("accepted", "indexed", "failed"):
                    ingest.add_metric([outcome], counters.get(outcome, 0))
                yield ingest
                yield CounterMetricFamily("foveal_ingest_task_retries", "Ingest tasks put back for a retry.",
                                          value=counters.get("retried", 0))
        if engine is not None:
            docs = GaugeMetricFamily("foveal_index_documents", "Documents per index.", labels=["index"])
            passages = GaugeMetricFamily("foveal_index_passages", "Passages per index.", labels=["index"])
            vectors = GaugeMetricFamily("foveal_index_vectors", "Vectors per index.", labels=["index"])
            size = GaugeMetricFamily("foveal_index_bytes", "Bytes on disk per index folder.", labels=["index"])
            for name in engine.list_indexes():
                try:
                    collection = engine.get(name)
                    docs.add_metric([name], collection.store.count())
                    passages.add_metric([name], collection.store.passage_count())
                    vectors.add_metric([name], len(collection.vectors))
                    size.add_metric([name], _folder_bytes(engine.path_of(name)))
                except Exception:
                    continue
            yield docs
            yield passages
            yield vectors
            yield size
            batches = CounterMetricFamily(
                "foveal_query_batches", "Micro-batches of searches (one query encoder pass, one FAISS call per filter "
                "group) per index.", labels=["index"])
            items = CounterMetricFamily(
                "foveal_query_batch_items", "Searches those micro-batches held; divided by foveal_query_batches_total "
                "it is the mean batch size.", labels=["index"])
            for name, (count, held) in sorted(engine.batch_stats().items()):
                batches.add_metric([name], count)
                items.add_metric([name], held)
            yield batches
            yield items


def _folder_bytes(path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def install_metrics(app: FastAPI) -> None:
    registry = CollectorRegistry()
    requests = Counter("foveal_http_requests", "HTTP requests.", ["method", "route", "status"], registry=registry)
    latency = Histogram("foveal_http_request_duration_seconds", "HTTP request latency.", ["method", "route"],
                        registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
    registry.register(_QueueCollector(app))
    from foveal.pipeline import timing

    registry.register(timing.collector())  # foveal_stage_seconds{stage}: the pipeline's stages, agent nodes
    app.state.metrics_registry = registry

    app.add_middleware(_HttpMetrics, requests=requests, latency=latency)


class _HttpMetrics:
    """Counts every HTTP request by method, route template and status, and times it until its last byte is sent.

    A pure ASGI middleware: Starlette's ``BaseHTTPMiddleware`` (``@app.middleware("http")``) runs the app in a
    task of its own and streams the response through a memory channel, a cost paid on every search. A request that
    raised below is counted as a 500 and raised on; the route template is the one the router matched
    (``unmatched`` when none did)."""

    def __init__(self, app, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            self.requests.labels(method, template, str(status)).inc()
            self.latency.labels(method, template).observe(time.perf_counter() - started)


@router.get("/readyz", tags=["health"], openapi_extra=OPTIONAL_SECURITY)
async def readyz(request: Request):
    """Ready: the queue backend (SQLite, or Redis with FOVEAL_QUEUE=celery) and every index's stores answer.
    503 with the failing checks otherwise. An index refused as damaged (:class:`IndexDamagedError`: its store
    cannot be trusted) is listed as ``refused`` but keeps the server ready: the other indexes serve, and a load
    balancer must not pull them because one index needs an operator.

    Without a key (when keys are configured) only ``status`` is answered: the checks name every index and its
    failure; they need an admin key for all indexes, or FOVEAL_OPEN_OPS=1."""
    state = request.app.state
    details = shows_ops_details(request)  # a wrong key is a 401 here too

    def check() -> dict[str, str]:
        checks: dict[str, str] = {}
        queue = getattr(state, "queue", None)
        name = "redis" if getattr(queue, "kind", "") == "celery" else "queue"
        try:
            if queue is None:
                raise RuntimeError("not started")
            queue.ping()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"down: {type(exc).__name__}: {exc}"
        engine = getattr(state, "engine", None)
        if engine is None:
            checks["engine"] = "down: not started"
            return checks
        for index in engine.list_indexes():
            try:
                collection = engine.get(index)
                collection.store.count()
                len(collection.vectors)
                len(collection.lexical)
                checks[f"index:{index}"] = "ok"
            except IndexDamagedError as exc:
                checks[f"index:{index}"] = f"refused: {exc.message}"
            except Exception as exc:
                checks[f"index:{index}"] = f"down: {type(exc).__name__}: {exc}"
        return checks

    checks = await run_in_threadpool(check)
    ready = all(v == "ok" or v.startswith("refused: ") for v in checks.values())
    content: dict = {"status": "ready" if ready else "unavailable"}
    if details:
        if "admin" not in getattr(request.state, "scopes", frozenset({"read", "write", "admin"})):
            # exception text (paths, hosts, library messages) is for the operator only: others see the verdict
            checks = {name: value.split(":", 1)[0] for name, value in checks.items()}
        content["checks"] = checks
    return JSONResponse(status_code=200 if ready else 503, content=content)


@router.get("/metrics", tags=["health"], dependencies=[Depends(require("read", ops=True))])
async def metrics(request: Request) -> Response:
    """Prometheus text format. Needs a read key for all indexes (the series name every index), unless
    FOVEAL_OPEN_OPS=1."""
    body = await run_in_threadpool(generate_latest, request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

"""Kill harness: real ``foveal ingest`` and ``foveal worker`` processes SIGKILLed at seeded moments beside a server
that searches and writes the same index; then every accepted document is checked in every store.

Used by ``tests/service/test_kill.py`` (a few dozen kills, in ``make test``) and ``bench/kill.py`` (hundreds).

Why it is built this way:

* **Moments come from the process's own progress**, not from wall time: every subprocess gets its own
  ``FOVEAL_TEST_HOOKS`` file, where :func:`foveal.index.collection._test_hook` appends ``store_committed <seq> <pid>``
  right after the document store commits a batch and ``derived_committed <seq> <pid>`` once FAISS and tantivy hold
  it; ``FOVEAL_TEST_HOOK_PAUSE_S`` holds the process between the two, so a kill can land in the window where a
  crash leaves the store ahead of the derived indexes (the window recovery has to heal). A seeded RNG picks, per
  process, whether to kill right after its n-th ``store_committed``, right after its n-th ``derived_committed``, or
  at a random delay into its ingest; the phase a kill really landed in is read back from the hook file afterwards
  (the last line the dead process wrote), so the counts printed are what happened, not what was planned.
* **The whole process group** is killed (``start_new_session`` + ``killpg``): a Celery worker's pool child dies
  with its parent, as in a machine or container loss.
* **Accepted** means: in an ingest file whose (last) run exited 0, or in a REST batch answered 202. Only those are
  checked, and all of them are: ``GET`` from the store, BM25 on the document's unique token returns it first and
  once, dense search on its own vector returns it first, and the counts of every store equal the number accepted.
* **The server runs in this process** (FastAPI ``TestClient`` on the caller's :class:`~foveal.engine.Engine`): it
  is never killed, and it saves a model load. It searches (BM25) and posts small batches all along, so a process
  that has searched also writes (the shape of the BM25-loss bug). With the embedded queue its own worker threads
  index the batches; with Celery the ``foveal worker`` processes do.
* Documents carry precomputed unit vectors and unique tokens, so no process needs the model to ingest them.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

#: Where a kill landed, read from the last hook line the killed process wrote.
PHASES = ("before_first_commit", "store_to_derived", "after_derived")
_LANDED = {None: "before_first_commit", "store_committed": "store_to_derived", "derived_committed": "after_derived"}


class HarnessError(AssertionError):
    """The harness itself could not go on (a process hung or failed): says which, with the tail of its log."""


@dataclass
class KillOptions:
    queue: str = "embedded"          # "embedded": the server's threads index REST batches; "celery": foveal workers
    ingest_kills: int = 12           # foveal ingest processes killed
    worker_kills: int = 0            # foveal worker processes killed (celery only)
    files: int = 6                   # ingest files to start with (more are made when the kills use them up)
    docs_per_file: int = 96
    batch_size: int = 8              # --batch-size of foveal ingest: one commit (and one hook pair) per batch
    parallel: int = 2                # ingest processes running at once
    rest_batch: int = 4              # documents per REST POST
    rest_interval_s: float = 0.4     # between REST POSTs
    pause_s: float = 0.3             # FOVEAL_TEST_HOOK_PAUSE_S: the store -> derived window a kill can land in
    seed: int = 0
    index: str = "kill"
    env: dict[str, str] = field(default_factory=dict)  # extra environment for subprocesses and the server settings
    stall_s: float = 240.0           # a process that shows no progress for this long fails the run
    jobs_timeout_s: float = 90.0     # how long the REST jobs may take to finish once the kills stop (redelivery
                                     # of a killed worker's task included)


@dataclass
class KillReport:
    queue: str
    kills: dict[str, dict[str, int]] = field(default_factory=dict)   # kind -> phase -> count
    intents: dict[str, int] = field(default_factory=dict)             # planned moment -> count
    launches: int = 0
    accepted: int = 0
    checked: int = 0
    lost: dict[str, list[str]] = field(default_factory=dict)         # store -> ids
    duplicated: dict[str, int] = field(default_factory=dict)         # store -> extra entries
    wrong: list[str] = field(default_factory=list)                   # stored with other content
    stats: dict[str, Any] = field(default_factory=dict)
    jobs: int = 0
    jobs_open: list[dict] = field(default_factory=list)
    jobs_failed: list[dict] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    ingest_failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total_kills(self) -> int:
        return sum(sum(p.values()) for p in self.kills.values())

    def phase_total(self, phase: str) -> int:
        return sum(p.get(phase, 0) for p in self.kills.values())

    @property
    def lost_ids(self) -> set[str]:
        return set().union(*self.lost.values()) if self.lost else set()

    def summary(self) -> str:
        per_phase = ", ".join(f"{p} {self.phase_total(p)}" for p in PHASES)
        per_kind = "; ".join(f"{k}: " + ", ".join(f"{p} {n}" for p, n in v.items() if n) for k, v in self.kills.items())
        lost = ", ".join(f"{s} {len(ids)}" for s, ids in self.lost.items())
        dup = ", ".join(f"{s} {n}" for s, n in self.duplicated.items())
        return (
            f"[{self.queue}] kills {self.total_kills} ({per_phase}) [{per_kind}]; planned {self.intents}; "
            f"{self.launches} processes; accepted {self.accepted}, checked {self.checked}; "
            f"lost {len(self.lost_ids)} ({lost}); duplicated {sum(self.duplicated.values())} ({dup}); "
            f"wrong {len(self.wrong)}; jobs {self.jobs}, open {len(self.jobs_open)}, with failures "
            f"{len(self.jobs_failed)}; server errors {len(self.server_errors)}; ingest failures "
            f"{len(self.ingest_failures)}; stats {self.stats}; {self.seconds:.0f} s"
        )

    def problems(self) -> list[str]:
        """Everything that breaks the promise 'nothing accepted is lost or served wrong' (empty when it holds)."""
        out = []
        for store, ids in self.lost.items():
            if ids:
                out.append(f"{len(ids)} accepted documents missing from {store}, e.g. {sorted(ids)[:5]}")
        for store, n in self.duplicated.items():
            if n:
                out.append(f"{store} holds {n} entries more than the documents it should hold")
        if self.wrong:
            out.append(f"{len(self.wrong)} documents stored with other content, e.g. {self.wrong[:5]}")
        if self.jobs_open:
            out.append(f"{len(self.jobs_open)} REST jobs never finished, e.g. {self.jobs_open[:3]}")
        if self.jobs_failed:
            out.append(f"{len(self.jobs_failed)} REST jobs reported failed documents, e.g. {self.jobs_failed[:3]}")
        if self.server_errors:
            out.append(f"{len(self.server_errors)} server errors, e.g. {self.server_errors[:3]}")
        if self.ingest_failures:
            out.append(f"ingest re-runs failed: {self.ingest_failures[:3]}")
        return out


# -- documents ----------------------------------------------------------------------------------------------------
class Corpus:
    """Documents with a unique 12-letter token and a random unit vector each; remembers what was accepted."""

    def __init__(self, seed: int, dimension: int) -> None:
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.dimension = dimension
        self.documents: dict[str, dict] = {}
        self._tokens: set[str] = set()

    def make(self, prefix: str, n: int) -> list[dict]:
        out = []
        vectors = self.np_rng.standard_normal((n, self.dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for i in range(n):
            token = ""
            while not token or token in self._tokens:
                token = "".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(12))
            self._tokens.add(token)
            doc_id = f"{prefix}-{i}"
            doc = {"_id": doc_id, "title": "kill test note", "text": f"{token} river glacier survey {doc_id}",
                   "vector": [float(x) for x in vectors[i]]}
            self.documents[doc_id] = doc
            out.append(doc)
        return out

    @staticmethod
    def token(doc: dict) -> str:
        return doc["text"].split()[0]


# -- processes ----------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """When to kill a process: after its n-th ``store_committed`` ("store") or ``derived_committed`` ("derived")
    line, ``delay`` seconds after its first line ("random"), or never ("complete")."""

    intent: str
    n: int = 1
    delay: float = 0.0

    def describe(self) -> str:
        return f"random {self.delay:.2f} s" if self.intent == "random" else f"{self.intent} {self.n}"


class Launch:
    """One subprocess in its own session, with its own hook file and log."""

    def __init__(self, kind: str, argv: list[str], env: dict[str, str], workdir: Path, number: int,
                 plan: Plan, label: str) -> None:
        self.kind, self.plan, self.label = kind, plan, label
        self.hook = workdir / f"hooks-{number}.txt"
        self.log = workdir / f"log-{number}-{kind}.txt"
        self.events: list[tuple[str, int, int]] = []
        self._offset = 0
        self.first_event_at: float | None = None
        self.last_progress = time.monotonic()
        env = {**env, "FOVEAL_TEST_HOOKS": str(self.hook)}
        if plan.intent == "complete":  # nothing to aim at: no need to hold each batch in the store -> derived window
            env["FOVEAL_TEST_HOOK_PAUSE_S"] = "0"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def poll_events(self) -> None:
        try:
            with open(self.hook, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.decode().splitlines():
            event, seq, pid = line.split()
            self.events.append((event, int(seq), int(pid)))
            self.last_progress = time.monotonic()
            if self.first_event_at is None:
                self.first_event_at = time.monotonic()

    def count(self, event: str) -> int:
        return sum(1 for e in self.events if e[0] == event)

    def due(self) -> bool:
        """Has the plan's moment come?"""
        plan = self.plan
        if plan.intent == "store":
            return self.count("store_committed") >= plan.n
        if plan.intent == "derived":
            return self.count("derived_committed") >= plan.n
        if plan.intent == "random":
            return self.first_event_at is not None and time.monotonic() - self.first_event_at >= plan.delay
        return False

    def kill(self) -> str:
        """SIGKILL the whole process group; returns the phase the kill landed in."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        self.poll_events()
        return _LANDED[self.events[-1][0] if self.events else None]

    def tail(self, chars: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


# -- the server ---------------------------------------------------------------------------------------------------
@contextmanager
def _patched_environ(extra: dict[str, str]):
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class ServerLoad:
    """Two threads on the in-process server: one searches (BM25, checking every hit is a whole accepted document),
    one posts small batches (documents of a 202 count as accepted)."""

    def __init__(self, client, corpus: Corpus, options: KillOptions, report: KillReport) -> None:
        self.client, self.corpus, self.options, self.report = client, corpus, options, report
        self.accepted: list[str] = []
        self.job_ids: list[str] = []
        self._stop_writes = threading.Event()
        self._stop_searches = threading.Event()
        self._lock = threading.Lock()
        self._batches = 0
        self._threads = [threading.Thread(target=self._search, daemon=True),
                         threading.Thread(target=self._write, daemon=True)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop_writes(self) -> None:
        self._stop_writes.set()
        self._threads[1].join(60)

    def stop(self) -> None:
        self.stop_writes()
        self._stop_searches.set()
        self._threads[0].join(60)

    def _error(self, message: str) -> None:
        with self._lock:
            self.report.server_errors.append(message)

    def _search(self) -> None:
        rng = random.Random(self.options.seed + 1)
        url = f"/v1/indexes/{self.options.index}/search"
        while not self._stop_searches.is_set():
            with self._lock:
                known = self.accepted[-50:]
            query = "river glacier"
            if known and rng.random() < 0.5:
                query = Corpus.token(self.corpus.documents[rng.choice(known)])
            try:
                response = self.client.post(url, json={"query": query, "k": 20, "pipeline": "bm25"})
            except Exception as exc:  # noqa: BLE001 - any failure of the server is a finding
                self._error(f"search {query!r}: {type(exc).__name__}: {exc}")
                continue
            if response.status_code != 200:
                self._error(f"search {query!r}: {response.status_code} {response.text[:200]}")
                continue
            for hit in response.json()["hits"]:
                sent = self.corpus.documents.get(hit["id"])
                if sent is None or hit["text"] != sent["text"]:
                    self._error(f"search {query!r} returned {hit['id']!r} with text {hit['text'][:60]!r}")
            time.sleep(0.1)  # a steady trickle: the point is that this process searches, not load

    def _write(self) -> None:
        url = f"/v1/indexes/{self.options.index}/documents"
        while not self._stop_writes.wait(self.options.rest_interval_s):
            self._batches += 1
            docs = self.corpus.make(f"rest{self._batches}", self.options.rest_batch)
            try:
                response = self.client.post(url, json={"documents": docs})
            except Exception as exc:  # noqa: BLE001
                self._error(f"post batch {self._batches}: {type(exc).__name__}: {exc}")
                continue
            if response.status_code != 202:
                self._error(f"post batch {self._batches}: {response.status_code} {response.text[:200]}")
                continue
            with self._lock:
                self.accepted.extend(d["_id"] for d in docs)
                self.job_ids.append(response.json()["job_id"])


# -- the run ------------------------------------------------------------------------------------------------------
def subprocess_env(home: Path, options: KillOptions) -> dict[str, str]:
    env = {**os.environ, **options.env, "FOVEAL_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "FOVEAL_TEST_HOOK_PAUSE_S": str(options.pause_s), "FOVEAL_QUEUE": options.queue,
           # every document carries its vector: no process needs the model, so workers do not preload it
           "FOVEAL_PRELOAD_MODELS": "0"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env.pop("FOVEAL_TEST_HOOKS", None)
    return env


def run_kills(engine, workdir: Path, options: KillOptions, log: Callable[[str], None] = print) -> KillReport:
    """Run one kill scenario on ``engine``'s home (the index is created when missing) and check the result."""
    from fastapi.testclient import TestClient

    from foveal.api.app import create_app
    from foveal.service.settings import ServiceSettings

    started = time.monotonic()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    home = engine.home
    report = KillReport(queue=options.queue)
    report.kills = {"ingest": dict.fromkeys(PHASES, 0), "worker": dict.fromkeys(PHASES, 0)}
    rng = random.Random(options.seed)
    collection = engine.open_or_create(options.index)
    corpus = Corpus(options.seed, collection.dimension)
    env = subprocess_env(home, options)
    with _patched_environ({**options.env, "FOVEAL_QUEUE": options.queue}):
        settings = ServiceSettings.from_env()

    files: list[Path] = []
    file_docs: dict[Path, list[str]] = {}
    completed: set[Path] = set()

    def new_file() -> Path:
        path = workdir / f"ingest-{len(files)}.jsonl"
        docs = corpus.make(f"f{len(files)}", options.docs_per_file)
        path.write_text("".join(json.dumps(d) + "\n" for d in docs))
        files.append(path)
        file_docs[path] = [d["_id"] for d in docs]
        return path

    for _ in range(options.files):
        new_file()

    total_target = options.ingest_kills + options.worker_kills
    store_target = math.ceil(total_target / 3)
    counter = {"launches": 0}

    def choose_plan(kind: str, planned_left: int) -> Plan:
        """Seeded; forces the store window while it is behind its third."""
        landed = report.phase_total("store_to_derived")
        pending = sum(1 for a in active if a.plan.intent == "store") + (
            1 if worker is not None and worker.plan.intent == "store" else 0)
        need = store_target - landed - pending
        roll = rng.random()
        if need > 0 and (planned_left <= need or roll < 0.5):
            intent = "store"
        elif roll < 0.75:
            intent = "derived"
        else:
            intent = "random"
        report.intents[intent] = report.intents.get(intent, 0) + 1
        if intent == "random":
            return Plan("random", delay=rng.uniform(0.0, 4 * options.pause_s))
        return Plan(intent, n=rng.randint(1, 3))

    def launch(kind: str, argv: list[str], plan: Plan, label: str) -> Launch:
        counter["launches"] += 1
        return Launch(kind, argv, env, workdir, counter["launches"], plan, label)

    def ingest_argv(path: Path) -> list[str]:
        return [sys.executable, "-m", "foveal.cli", "ingest", str(path), "--index", options.index,
                "--batch-size", str(options.batch_size)]

    worker_argv = [sys.executable, "-m", "foveal.cli", "worker", "--concurrency", "1", "--loglevel", "WARNING"]

    active: list[Launch] = []
    worker: Launch | None = None
    kills = {"ingest": 0, "worker": 0}
    with TestClient(create_app(engine, settings=settings)) as client:
        load = ServerLoad(client, corpus, options, report)
        load.start()
        try:
            if options.queue == "celery":
                worker = launch("worker", worker_argv,
                                choose_plan("worker", options.worker_kills)
                                if options.worker_kills else Plan("complete"),
                                "worker")

            def ingest_left() -> int:
                return options.ingest_kills - kills["ingest"] - sum(1 for a in active if a.plan.intent != "complete")

            def store_behind() -> bool:
                return report.phase_total("store_to_derived") < store_target

            extra_allowed = max(4, total_target // 2)  # kills beyond the quota, only if the store window is behind

            def want_more_ingest_kills() -> bool:
                if ingest_left() > 0:
                    return True
                return (store_behind() and kills["ingest"] + len(active) < options.ingest_kills + extra_allowed
                        and (worker is None or kills["worker"] >= options.worker_kills))

            # -- the kill phase -------------------------------------------------------------------------------------
            while True:
                while len(active) < options.parallel and want_more_ingest_kills():
                    busy = {a.label for a in active}
                    free = [f for f in files if f not in completed and str(f) not in busy]
                    path = free[0] if free else new_file()
                    left = ingest_left() + max(0, options.worker_kills - kills["worker"])
                    active.append(launch("ingest", ingest_argv(path), choose_plan("ingest", left), str(path)))
                    files.append(files.pop(files.index(path)))  # round robin
                for proc in list(active):
                    proc.poll_events()
                    if proc.due():
                        phase = proc.kill()
                        kills["ingest"] += 1
                        report.kills["ingest"][phase] += 1
                        active.remove(proc)
                        log(f"kill {kills['ingest'] + kills['worker']}: ingest {Path(proc.label).name} "
                            f"({proc.plan.describe()}) "
                            f"landed {phase}")
                    elif proc.proc.poll() is not None:
                        active.remove(proc)
                        proc.poll_events()
                        if proc.proc.returncode == 0 and not proc.events and proc.plan.intent != "complete":
                            raise HarnessError(f"foveal ingest {proc.label} wrote no FOVEAL_TEST_HOOKS lines: this "
                                               "code lacks the kill-test hook in Collection._commit")
                        if proc.proc.returncode == 0:
                            completed.add(Path(proc.label))
                        else:
                            raise HarnessError(f"foveal ingest {proc.label} exited {proc.proc.returncode}:\n"
                                               f"{proc.tail()}")
                    elif time.monotonic() - proc.last_progress > options.stall_s:
                        proc.kill()
                        raise HarnessError(f"foveal ingest {proc.label} made no progress:\n{proc.tail()}")
                if worker is not None:
                    worker.poll_events()
                    if worker.plan.intent != "complete" and worker.due():
                        phase = worker.kill()
                        kills["worker"] += 1
                        report.kills["worker"][phase] += 1
                        log(f"kill {kills['ingest'] + kills['worker']}: worker "
                            f"({worker.plan.describe()}) "
                            f"landed {phase}")
                        more = kills["worker"] < options.worker_kills or (
                            store_behind() and kills["worker"] < options.worker_kills + extra_allowed
                            and ingest_left() <= 0 and not active)
                        left = max(0, options.worker_kills - kills["worker"]) + max(0, ingest_left())
                        plan = choose_plan("worker", left) if more else Plan("complete")
                        worker = launch("worker", worker_argv, plan, "worker")
                    elif worker.proc.poll() is not None:
                        raise HarnessError(f"foveal worker exited {worker.proc.returncode}:\n{worker.tail()}")
                    elif worker.plan.intent != "complete" and time.monotonic() - worker.last_progress > options.stall_s:
                        raise HarnessError(f"foveal worker made no progress:\n{worker.tail()}")
                if counter["launches"] > 3 * total_target + len(files) + 10:
                    raise HarnessError(f"{counter['launches']} processes started for {kills} kills: the kills do not "
                                       "find their moments (are batches committing?)")
                worker_done = worker is None or worker.plan.intent == "complete"
                if not active and not want_more_ingest_kills() and worker_done:
                    break
                time.sleep(0.01)
            load.stop_writes()
            log(f"kill phase over after {time.monotonic() - started:.0f} s: {kills}")

            # -- every ingest re-run to completion ------------------------------------------------------------------
            pending = [f for f in files if f not in completed]
            while pending or active:
                while pending and len(active) < options.parallel:
                    path = pending.pop(0)
                    active.append(launch("ingest", ingest_argv(path), Plan("complete"), str(path)))
                for proc in list(active):
                    proc.poll_events()
                    if proc.proc.poll() is not None:
                        active.remove(proc)
                        if proc.proc.returncode == 0:
                            completed.add(Path(proc.label))
                        else:
                            report.ingest_failures.append(
                                f"{proc.label}: exit {proc.proc.returncode}: {proc.tail(300)}")
                    elif time.monotonic() - proc.last_progress > options.stall_s:
                        proc.kill()
                        report.ingest_failures.append(f"{proc.label}: hung: {proc.tail(300)}")
                        active.remove(proc)
                time.sleep(0.05)

            # -- every REST job to its end -------------------------------------------------------------------------
            deadline = time.monotonic() + options.jobs_timeout_s
            views: dict[str, dict] = {}
            for job_id in load.job_ids:
                while True:
                    view = client.get(f"/v1/jobs/{job_id}").json()
                    if view.get("state") == "done" or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                views[job_id] = view
            report.jobs = len(views)
            report.jobs_open = [v for v in views.values() if v.get("state") != "done"]
            report.jobs_failed = [v for v in views.values() if v.get("failed")]
            log(f"jobs settled after {time.monotonic() - started:.0f} s")
        finally:
            load.stop()
            for proc in active + ([worker] if worker is not None else []):
                try:
                    os.killpg(proc.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.proc.wait(30)

    report.launches = counter["launches"]
    accepted = [d for f in files if f in completed for d in file_docs[f]] + load.accepted
    report.accepted = len(accepted)
    check(home, options.index, {i: corpus.documents[i] for i in accepted}, report)
    report.seconds = time.monotonic() - started
    return report


def check(home: Path, index: str, expected: dict[str, dict], report: KillReport) -> None:
    """Every expected document in every store, as a fresh Engine sees the files; counts equal per store."""
    from foveal.engine import Engine
    from foveal.index.base import doc_key_of
    from foveal.pipeline.request import SearchRequest

    fresh = Engine(home)
    try:
        collection = fresh.get(index)
        stats = collection.stats()
        report.stats = {k: stats[k] for k in ("documents", "passages", "vectors", "lexical_documents")}
        lost = {"store": [], "bm25": [], "dense": []}
        keys: dict[str, int] = {}
        for doc_id, doc in expected.items():
            stored = collection.get(doc_id)
            if stored is None:
                lost["store"].append(doc_id)
                continue
            keys[doc_id] = stored.doc_key
            if stored.text != doc["text"]:
                report.wrong.append(doc_id)
        bm25_dups = 0
        pipeline = fresh.pipeline(index)
        for doc_id, doc in expected.items():
            hits = [h.id for h in pipeline.search(SearchRequest(query=Corpus.token(doc), k=5, pipeline="bm25")).hits]
            if not hits or hits[0] != doc_id:
                lost["bm25"].append(doc_id)
            bm25_dups += max(0, hits.count(doc_id) - 1)
        ids = list(expected)
        dense_dups = 0
        if ids:
            matrix = np.asarray([expected[i]["vector"] for i in ids], dtype=np.float32)
            for start in range(0, len(ids), 512):
                _, found = collection.vectors.search(matrix[start:start + 512], 2)
                for doc_id, row in zip(ids[start:start + 512], found.tolist()):
                    top = [doc_key_of(p) for p in row if p >= 0]
                    if not top or doc_id not in keys or top[0] != keys[doc_id]:
                        lost["dense"].append(doc_id)
                    elif len(top) > 1 and top[1] == top[0]:
                        dense_dups += 1
        report.lost = lost
        report.checked = len(expected)
        n = len(expected)
        report.duplicated = {
            "store": max(0, stats["documents"] - (n - len(lost["store"]))),
            "bm25": max(0, stats["lexical_documents"] - (n - len(lost["bm25"]))) + bm25_dups,
            "dense": max(0, stats["vectors"] - (n - len(lost["dense"]))) + dense_dups,
            "passages": max(0, stats["passages"] - (n - len(lost["store"]))),
        }
    finally:
        fresh.close()


def kill_at_hook(command: list[str], env: dict[str, str], hooks: Path, *, event: str = "store_committed",
                 count: int = 1, cwd: Path | None = None, timeout_s: float = 300.0) -> subprocess.Popen:
    """Start ``command`` and SIGKILL it once the test-hook log ``hooks`` holds ``count`` lines of ``event`` (with
    ``FOVEAL_TEST_HOOK_PAUSE_S`` in ``env`` the child is paused right there). Waits for the hook line, not a time:
    the child may load a model first. Fails the test if the child ends first or the line never comes; returns the
    dead child (``returncode`` -9)."""
    import pytest

    child = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            lines = hooks.read_text().splitlines() if hooks.exists() else []
            if sum(line.startswith(event) for line in lines) >= count:
                break
            if child.poll() is not None:
                pytest.fail(f"the child ended before {count} {event} line(s) (rc {child.returncode})")
            if time.monotonic() > deadline:
                pytest.fail(f"no {event} line from the child in {timeout_s:.0f} s")
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child

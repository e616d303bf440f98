"""Stream a corpus file to a foveal server as ingest jobs: bounded in flight, resumable, with a summary of refusals.

This is what ``foveal ingest PATH --index NAME --server URL`` runs; the batches are indexed by the server's workers
(the embedded queue, or the Celery workers of the compose stack), not in this process.

* **Batches.** Non-blank lines are cut into batches of ``batch_size`` documents and POSTed to
  ``/v1/indexes/{index}/documents``. At most ``max_in_flight`` jobs are not done at once: past that the command
  polls its jobs before sending more, so a large corpus never floods the server's queue. A 429 or 503 (rate limit,
  backpressure) is waited out as the server's ``Retry-After`` says.
* **Journal.** Once the server accepted a batch (``202``: durably queued), one line is appended to a local journal
  and fsynced: the byte range ``[offset, end)`` of the file it covers, its job id, and the documents refused before
  sending. The journal's first line names the file (absolute path, size, mtime) and the server and index. A rerun
  with the same journal sends only lines outside the accepted ranges and follows the journaled jobs again, so an
  interrupted run resumes without re-sending what was accepted. Ctrl-C (SIGINT or SIGTERM) stops after the batch in
  flight is journaled; after a SIGKILL the one batch between ``202`` and its journal line may be sent again, which
  changes nothing (upserts of unchanged documents are no-ops). A journal whose file changed since is refused
  (``restart=True`` starts over).
* **Refusals.** A line that is no JSON is refused here (by line number); a document the server refuses, on sight or
  while indexing, is in its job's errors; a batch answered 422 has the documents it names dropped (with the
  server's reason) and is sent again without them. :attr:`IngestReport.rejected` lists them all.

Example::

    >>> from foveal.client import Client
    >>> from foveal.client.ingest import RemoteIngest
    >>> with Client("http://127.0.0.1:8000") as client:                     # doctest: +SKIP
    ...     report = RemoteIngest(client, "corpus.jsonl", "papers").run()
    ...     report.summary()
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from foveal.client._client import Client, Job
from foveal.client.errors import (APIError, ClientError, InvalidInputError, NotFoundError, PayloadTooLargeError,
                                  RateLimitedError, UnavailableError)

JOURNAL_VERSION = 1
#: How many refused documents the summary lists (all are counted).
SUMMARY_REJECTED = 50
_DOC_FIELD = re.compile(r"^documents\.(\d+)(\.|$)")


class JournalMismatchError(ClientError):
    """The journal belongs to another file, server or index, or the file changed since it was written."""


@dataclass
class Line:
    number: int  # 1-based line number in the (decompressed) file
    offset: int  # byte offset of the line's start in the (decompressed) file
    end: int
    document: dict[str, Any] | None
    problem: str | None = None


@dataclass
class IngestReport:
    index: str
    server: str
    journal: str
    documents: int = 0
    indexed: int = 0
    batches_sent: int = 0
    batches_resumed: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "index": self.index, "server": self.server, "documents": self.documents, "indexed": self.indexed,
            "rejected": len(self.rejected), "batches_sent": self.batches_sent,
            "batches_resumed": self.batches_resumed, "seconds": round(self.seconds, 2),
            "docs_per_s": round(self.indexed / self.seconds, 1) if self.seconds > 0 else None,
            "interrupted": self.interrupted, "journal": self.journal,
            "rejected_documents": self.rejected[:SUMMARY_REJECTED],
        }


def read_lines(path: Path) -> Iterator[Line]:
    """Each non-blank line with its number and byte range; a line that is no JSON object carries ``problem``."""
    opener = gzip.open if path.suffix == ".gz" else open
    offset = 0
    with opener(path, "rb") as raw:
        for number, data in enumerate(raw, start=1):
            start, offset = offset, offset + len(data)
            if not data.strip():
                continue
            try:
                document = json.loads(data.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield Line(number, start, offset, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
                continue
            except json.JSONDecodeError as exc:
                yield Line(number, start, offset, None, f"malformed JSON: {exc.msg} at column {exc.colno}")
                continue
            if not isinstance(document, dict):
                yield Line(number, start, offset, None, f"a document is a JSON object, not {type(document).__name__}")
                continue
            yield Line(number, start, offset, document)


def default_journal(server: str, index: str, path: Path) -> Path:
    """``$XDG_STATE_HOME/foveal/ingest/<hash>.jsonl`` (``~/.local/state``), one per server, index and file."""
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    key = hashlib.sha256(f"{server.rstrip('/')}\n{index}\n{path.resolve()}".encode()).hexdigest()[:24]
    return state / "foveal" / "ingest" / f"{key}.jsonl"


class Journal:
    """The accepted batches of one file, appended and fsynced one line at a time."""

    def __init__(self, path: Path, header: dict[str, Any], restart: bool = False) -> None:
        self.path = path
        self.entries: list[dict[str, Any]] = []
        if restart and path.exists():
            path.unlink()
        if path.exists():
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if lines and lines[0] != header:
                raise JournalMismatchError(
                    f"the journal {path} was written for another file, server or index, or the file changed since "
                    "(size or mtime): pass --restart to send everything again")
            self.entries = lines[1:]
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._append(header)

    def _append(self, entry: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def record(self, entry: dict[str, Any]) -> None:
        self._append(entry)
        self.entries.append(entry)

    def covers(self) -> list[tuple[int, int]]:
        return sorted((e["offset"], e["end"]) for e in self.entries)


def _covered(ranges: list[tuple[int, int]], offset: int) -> bool:
    # ranges are few (one per batch) and sorted; a bisect would do too
    lo, hi = 0, len(ranges)
    while lo < hi:
        mid = (lo + hi) // 2
        if ranges[mid][1] <= offset:
            lo = mid + 1
        else:
            hi = mid
    return lo < len(ranges) and ranges[lo][0] <= offset < ranges[lo][1]


class RemoteIngest:
    """One ingest of ``path`` into ``index`` over ``client`` (see the module docstring)."""

    def __init__(self, client: Client, path: str | Path, index: str, *, batch_size: int = 256,
                 max_in_flight: int = 4, journal: str | Path | None = None, restart: bool = False,
                 config: dict[str, Any] | None = None, poll: float = 0.25,
                 on_progress: Callable[[int, int | None], None] | None = None,
                 should_stop: Callable[[], bool] = lambda: False) -> None:
        if batch_size < 1 or max_in_flight < 1:
            raise ValueError("batch_size and max_in_flight must be >= 1")
        self.client = client
        self.path = Path(path)
        self.index = index
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.config = config
        self.poll = poll
        self.on_progress = on_progress or (lambda done, total: None)
        self.should_stop = should_stop
        stat = self.path.stat()
        header = {"journal": JOURNAL_VERSION, "file": str(self.path.resolve()), "size": stat.st_size,
                  "mtime_ns": stat.st_mtime_ns, "server": client.base_url, "index": index}
        self.journal = Journal(Path(journal) if journal else default_journal(client.base_url, index, self.path),
                               header, restart)
        self.report = IngestReport(index=index, server=client.base_url, journal=str(self.journal.path))
        #: job id -> the latest state seen (None: not polled yet)
        self._jobs: dict[str, Job | None] = {}
        self._settled = 0  # documents refused before a job existed (here, or a batch the server refused)
        self.expected: int | None = None  # documents this run will account for (journaled + still to send)

    # -- the run -------------------------------------------------------------------------------------------------
    def run(self) -> IngestReport:
        started = time.perf_counter()
        self._ensure_index()
        covered = self.journal.covers()
        total = 0
        for entry in self.journal.entries:  # batches accepted by an earlier run: follow their jobs again
            self.report.batches_resumed += 1
            total += entry["lines"]
            self._settle(entry["rejected"])
            if entry.get("job_id"):
                self._jobs[entry["job_id"]] = None
        self.report.documents = total
        self.expected = total + sum(1 for line in read_lines(self.path) if not _covered(covered, line.offset))
        self._progress()
        batch: list[Line] = []
        for line in read_lines(self.path):
            if _covered(covered, line.offset):
                continue
            self.report.documents += 1
            batch.append(line)
            if len(batch) >= self.batch_size:
                if not self._send_when_room(batch):
                    break
                batch = []
        else:
            if batch:
                self._send_when_room(batch)
        while self._unfinished():
            self._poll_jobs()
            if self._unfinished():
                time.sleep(self.poll)
        self._poll_jobs()
        self.report.indexed = sum(job.done for job in self._jobs.values() if job is not None)
        for job in self._jobs.values():
            if job is not None:
                self.report.rejected += [{"id": e.id, "reason": e.reason, "job": job.id} for e in job.errors]
        self.report.seconds = time.perf_counter() - started
        return self.report

    def _ensure_index(self) -> None:
        try:
            self.client.index_stats(self.index)
        except NotFoundError:
            self.client.create_index(self.index, self.config)

    def _unfinished(self) -> list[str]:
        return [job_id for job_id, job in self._jobs.items() if job is None or not job.finished]

    def _settle(self, rejected: list[dict[str, Any]]) -> None:
        self.report.rejected += rejected
        self._settled += len(rejected)

    def _progress(self) -> None:
        done = self._settled + sum(j.done + j.failed for j in self._jobs.values() if j is not None)
        self.on_progress(done, self.expected)

    def _poll_jobs(self) -> None:
        for job_id in self._unfinished():
            try:
                self._jobs[job_id] = self.client.job(job_id)
            except NotFoundError:  # the record expired (FOVEAL_JOB_TTL_S) or the server lost it: nothing to follow
                self._jobs.pop(job_id)
                self.report.rejected.append({"id": None, "job": job_id, "reason": "job record gone; not followed"})
            except (RateLimitedError, UnavailableError) as exc:
                time.sleep(exc.retry_after if exc.retry_after is not None else self.poll)
        self._progress()

    def _send_when_room(self, batch: list[Line]) -> bool:
        """Send one batch once fewer than ``max_in_flight`` jobs run; False when asked to stop first."""
        while len(self._unfinished()) >= self.max_in_flight:
            if self.should_stop():
                break
            self._poll_jobs()
            if len(self._unfinished()) >= self.max_in_flight:
                time.sleep(self.poll)
        if self.should_stop() or not self._send(batch):
            self.report.interrupted = True
            self.report.documents -= len(batch)
            return False
        self._progress()
        return True

    def _send(self, batch: list[Line]) -> bool:
        """Send one batch until the server accepts it (or refuses all of it) and journal it; False when asked to
        stop while the server kept answering 429/503 (the batch is then neither accepted nor journaled)."""
        rejected = [{"id": None, "line": line.number, "reason": line.problem} for line in batch if line.problem]
        documents = [(line.number, line.document) for line in batch if line.document is not None]
        job_id = None
        while documents:
            try:
                accepted = self.client.add_documents(self.index, [doc for _, doc in documents])
            except (RateLimitedError, UnavailableError) as exc:  # the client's own bounded wait ran out: keep waiting
                if self.should_stop():
                    return False
                time.sleep(exc.retry_after if exc.retry_after is not None else 5)
                continue
            except (InvalidInputError, PayloadTooLargeError) as exc:
                doomed = self._refused_positions(exc, documents)
                if not doomed:
                    raise
                for position in sorted(doomed, reverse=True):
                    number, doc = documents.pop(position)
                    rejected.append({"id": _doc_id(doc), "line": number, "reason": doomed[position]})
                continue
            job_id = accepted.job_id
            self._jobs[job_id] = None
            self.report.batches_sent += 1
            break
        self.journal.record({"offset": batch[0].offset, "end": batch[-1].end, "lines": len(batch),
                             "job_id": job_id, "rejected": rejected})
        self._settle(rejected)
        return True

    @staticmethod
    def _refused_positions(exc: APIError, documents: list[tuple[int, dict]]) -> dict[int, str]:
        """Positions in the batch of the documents a 422 or 413 names, with the server's reason."""
        doomed: dict[int, str] = {}
        if isinstance(exc, InvalidInputError) and isinstance(exc.details, list):
            for problem in exc.details:
                match = _DOC_FIELD.match(str(problem.get("field", "")))
                if match and int(match.group(1)) < len(documents):
                    doomed.setdefault(int(match.group(1)), f"{problem['field']}: {problem.get('message')}")
        elif isinstance(exc, PayloadTooLargeError) and isinstance(exc.details, dict) and "doc_id" in exc.details:
            for position, (_, doc) in enumerate(documents):
                if _doc_id(doc) == exc.details["doc_id"]:
                    doomed[position] = exc.message
                    break
        return doomed


def _doc_id(document: dict[str, Any]) -> str | None:
    value = document.get("_id", document.get("id"))
    return value if isinstance(value, str) else None

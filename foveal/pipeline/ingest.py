"""Batch ingest: read documents, validate each, and upsert them in batches.

A malformed record is reported with its line number and skipped; everything accepted before (and after) it is
kept, because each batch commits on its own. Re-running an ingest skips documents whose content is unchanged.

Example::

    >>> report = ingest_file(collection, "corpus.jsonl")     # doctest: +SKIP
    >>> report.accepted, report.errors[:1]                   # doctest: +SKIP
    (5183, [])
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from foveal.documents import Document, parse_document
from foveal.errors import DocumentError, InvalidInputError
from foveal.index.collection import Collection, WriteResult

DEFAULT_BATCH = 256


@dataclass(slots=True)
class IngestReport:
    accepted: int = 0
    result: WriteResult = field(default_factory=WriteResult)
    #: (line number, message) of every record that was rejected
    errors: list[tuple[int | None, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        r = self.result
        return {
            "accepted": self.accepted,
            "added": len(r.added),
            "updated": len(r.updated),
            "unchanged": len(r.unchanged),
            "rejected": len(self.errors),
            "passages": r.passages,
        }


def read_jsonl(path: Path | str) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, parsed JSON or DocumentError)`` for each non-blank line of a .jsonl or .jsonl.gz file."""
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"no such file: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as raw:
            for line_no, data in enumerate(raw, start=1):
                if not data.strip():
                    continue
                try:
                    line = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield line_no, DocumentError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", line=line_no)
                    continue
                try:
                    yield line_no, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield line_no, DocumentError(f"malformed JSON: {exc.msg} at column {exc.colno}", line=line_no)
    except (OSError, EOFError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from exc


def ingest_records(
    collection: Collection,
    records: Iterable[tuple[int | None, Any]],
    *,
    batch_size: int = DEFAULT_BATCH,
    strict: bool = False,
    on_batch: Callable[[int, WriteResult], None] | None = None,
    on_error: Callable[[int | None, str], None] | None = None,
) -> IngestReport:
    """Validate and upsert ``(line, raw)`` records in batches. With ``strict`` the first bad record stops the run
    (after committing what came before it)."""
    report = IngestReport()
    batch: list[Document] = []

    def flush() -> None:
        if not batch:
            return
        result = collection.upsert(batch)
        report.result.merge(result)
        report.accepted += len(batch)
        if on_batch:
            on_batch(len(batch), result)
        batch.clear()

    for line, raw in records:
        try:
            if isinstance(raw, DocumentError):
                raise raw
            batch.append(parse_document(raw, line=line, **collection.document_rules()))
        except DocumentError as exc:
            report.errors.append((line, exc.reason))
            if on_error:
                on_error(line, exc.reason)
            if strict:
                break
            continue
        if len(batch) >= batch_size:
            flush()
    flush()
    collection.flush()
    return report


def ingest_file(collection: Collection, path: Path | str, **kwargs) -> IngestReport:
    return ingest_records(collection, read_jsonl(path), **kwargs)

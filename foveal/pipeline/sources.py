"""What ``foveal ingest`` reads besides BEIR JSON lines: CSV/TSV and Parquet tables, and folders of files.

Every reader yields ``(where, raw document or DocumentError)`` like :func:`foveal.pipeline.ingest.read_jsonl`, so
the same batching, progress bar and per-record error report apply. ``where`` is the line (CSV), the row (Parquet,
counted from 1) or the file's path relative to the folder.

* **Tables** map columns to fields with :class:`ColumnMap`: ``id`` (default ``_id`` or ``id``), ``title``,
  ``text``, ``timestamp`` (each used when present) and ``metadata`` (default: every other column; empty CSV cells
  are left out). Parquet values keep their types (numbers, booleans; dates become ISO 8601).
* **Folders**: ``.txt``, ``.md``/``.markdown``, ``.html``/``.htm`` and ``.pdf`` files, found recursively (hidden
  files and folders skipped). The path relative to the folder is the id, the file's modification time the
  timestamp; the title is a Markdown ``# heading``, the HTML ``<title>``, the PDF's title, else the file name.
  Text comes from BeautifulSoup (HTML, without scripts and styles) and pypdf (PDF). A file that cannot be read or
  yields no text is reported under its path, and the others are ingested.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from foveal.errors import DocumentError, InvalidInputError

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
FOLDER_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")


@dataclass(slots=True)
class ColumnMap:
    id: str | None = None
    title: str | None = None
    text: str | None = None
    timestamp: str | None = None
    #: Columns that become metadata; None: every column not mapped to a field.
    metadata: list[str] | None = None

    def resolve(self, columns: list[str]) -> "ColumnMap":
        """Fill the defaults from the table's columns; a named column that is missing is an error."""
        have = set(columns)
        for name in ("id", "title", "text", "timestamp"):
            wanted = getattr(self, name)
            if wanted is not None and wanted not in have:
                raise InvalidInputError(f"no column {wanted!r} for {name}; the columns are: {', '.join(columns)}")
        ident = self.id or next((c for c in ("_id", "id") if c in have), None)
        if ident is None:
            raise InvalidInputError(f"no id column (_id or id); name one with --id-column. The columns are: "
                                    f"{', '.join(columns)}")
        title = self.title or ("title" if "title" in have else None)
        text = self.text or ("text" if "text" in have else None)
        stamp = self.timestamp or ("timestamp" if "timestamp" in have else None)
        if title is None and text is None:
            raise InvalidInputError("no title or text column; name one with --text-column")
        mapped = {ident, title, text, stamp} - {None}
        if self.metadata is not None:
            missing = [c for c in self.metadata if c not in have]
            if missing:
                raise InvalidInputError(f"no metadata column {', '.join(map(repr, missing))}")
            metadata = list(self.metadata)
        else:
            metadata = [c for c in columns if c not in mapped]
        return ColumnMap(ident, title, text, stamp, metadata)


def _plain(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _record(row: dict[str, Any], columns: ColumnMap, *, drop_empty: bool) -> dict[str, Any]:
    raw: dict[str, Any] = {"_id": row.get(columns.id)}
    if raw["_id"] is not None and not isinstance(raw["_id"], str):
        raw["_id"] = str(raw["_id"])
    for field, column in (("title", columns.title), ("text", columns.text)):
        if column is not None and row.get(column) is not None:
            raw[field] = str(row[column])
    if columns.timestamp is not None and row.get(columns.timestamp) not in (None, ""):
        raw["timestamp"] = _plain(row[columns.timestamp])
    metadata = {}
    for column in columns.metadata or []:
        value = _plain(row.get(column))
        if value is None or (drop_empty and value == ""):
            continue
        metadata[column] = value
    raw["metadata"] = metadata
    return raw


def read_csv(path: Path, columns: ColumnMap | None = None) -> Iterator[tuple[int, Any]]:
    """CSV (or TSV, by suffix) with a header row; yields ``(line, record)``."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            if reader.fieldnames is None:
                raise InvalidInputError(f"{path}: empty file (no header row)")
            mapping = (columns or ColumnMap()).resolve(list(reader.fieldnames))
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except (csv.Error, UnicodeDecodeError) as exc:
                    yield reader.line_num, DocumentError(f"unreadable row: {exc}", line=reader.line_num)
                    continue
                if None in row:
                    yield reader.line_num, DocumentError(f"{len(row[None])} more cells than the header has columns",
                                                         line=reader.line_num)
                    continue
                yield reader.line_num, _record(row, mapping, drop_empty=True)
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_parquet(path: Path, columns: ColumnMap | None = None) -> Iterator[tuple[int, Any]]:
    """A Parquet file, a record batch at a time; yields ``(row, record)`` with rows counted from 1."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidInputError("reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises its own kinds for a file that is no Parquet
        raise InvalidInputError(f"{path}: not a readable Parquet file ({exc})") from None
    mapping = (columns or ColumnMap()).resolve(table.schema_arrow.names)
    row_number = 0
    for batch in table.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            row_number += 1
            yield row_number, _record(row, mapping, drop_empty=False)


def parquet_rows(path: Path) -> int | None:
    try:
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # noqa: BLE001
        return None


def folder_files(folder: Path) -> list[Path]:
    """The files a folder ingest reads, in a stable order (hidden files and folders skipped)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(FOLDER_SUFFIXES):
                found.append(Path(root) / name)
    return found


def extract(path: Path) -> tuple[str, str]:
    """``(title, text)`` of one file; raises ValueError with a reason when it cannot."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        try:
            reader = PdfReader(path)
            pages = [page.extract_text() or "" for page in reader.pages]
            title = (reader.metadata.title if reader.metadata and reader.metadata.title else "") or ""
        except (PdfReadError, OSError, ValueError, KeyError) as exc:
            raise ValueError(f"unreadable PDF: {exc}") from None
        return str(title).strip(), "\n\n".join(p.strip() for p in pages if p.strip())
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if suffix in (".html", ".htm"):
        from bs4 import BeautifulSoup

        soup = BeautifulSoup(content, "html.parser")
        title = soup.title.get_text(" ", strip=True) if soup.title else ""
        for tag in soup(["script", "style", "noscript", "template", "head"]):
            tag.decompose()
        lines = [line.strip() for line in soup.get_text("\n").splitlines()]
        return title, "\n".join(line for line in lines if line)
    if suffix in (".md", ".markdown"):
        for line in content.splitlines():
            if line.startswith("# "):
                return line[2:].strip(), content
            if line.strip():
                break
    return "", content


def read_folder(folder: Path) -> Iterator[tuple[str, Any]]:
    """Yields ``(relative path, record)`` for every file :func:`folder_files` finds."""
    for path in folder_files(folder):
        rel = path.relative_to(folder).as_posix()
        try:
            title, text = extract(path)
            stat = path.stat()
        except (ValueError, OSError) as exc:
            yield rel, DocumentError(str(exc) if isinstance(exc, ValueError) else f"cannot read: {exc.strerror}")
            continue
        if not text.strip():
            yield rel, DocumentError("no text could be extracted")
            continue
        yield rel, {"_id": rel, "title": title or path.stem, "text": text, "timestamp": stat.st_mtime,
                    "metadata": {"path": rel, "format": path.suffix.lower().lstrip(".")}}

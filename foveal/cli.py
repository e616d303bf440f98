"""The ``foveal`` command line.

::

    foveal ingest corpus.jsonl --index papers          # BEIR corpus.jsonl / .jsonl.gz, progress bar in docs/s
    foveal ingest corpus.jsonl --index papers --server http://api:8000   # as jobs on the server's workers
    foveal search "protein folding" --index papers [--k 10] [--pipeline hybrid] [--json]
    foveal run --index papers --queries queries.jsonl --out run.trec [--k 100]
    foveal eval --run run.trec --qrels qrels/test.tsv
    foveal serve [--host 127.0.0.1] [--port 8000]          # other hosts need API keys (README: Securing foveal)
    foveal worker [--concurrency 1] [--queues foveal-ingest]   # ingest worker (Celery with FOVEAL_QUEUE=celery)
    foveal ask "QUESTION" --index papers [--planner rule|llm] [--json]
    foveal stats --index papers                          # counts in every store, log position, config (JSON)
    foveal indexes                                       # the index names, one a line
    foveal delete ID [ID ...] --index papers             # delete documents (or --where FILTER)
    foveal drop papers                                   # delete an index and its files
    foveal reindex papers --into papers-v2 --config cfg.json   # re-encode from the store (resumable)
    foveal alias set papers-live papers-v2               # create or atomically move an alias
    foveal index list|stats|delete                       # manage indexes
    foveal jobs [JOB_ID]                                 # recent ingest jobs
    foveal list|export --index papers                    # scroll or export documents (JSON lines)
    foveal update ID --set KEY=VALUE --index papers      # metadata without encoding again

Only the commands that encode text (dense or hybrid search, ingest of documents without a ``vector``, run, ask,
and creating an index, which records the model's dimension) import torch and load the model; BM25 search, stats,
listing, deletes and ingests of documents that carry vectors start in well under a second.

Data lives under ``$FOVEAL_HOME``; unset, the ``.foveal`` folder of the checkout this runs in (as ``make run`` uses),
else ``~/.local/share/foveal``. Errors are printed as one line and exit
with status 2 (bad input) or 1 (some records rejected during ingest).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from foveal.config import IndexConfig, Pipeline
from foveal.errors import FovealError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="foveal: hybrid search with attention stages.")
console = Console(stderr=True)
out = Console()


#: Where the home came from, said when an index is not found there.
_HOME_NOTE: list[str] = []


def find_home() -> tuple[Path, str]:
    """The home this command uses and how it was chosen: ``$FOVEAL_HOME``; else a ``.foveal`` folder holding
    indexes in the current folder or one above it (what ``make run`` creates in a checkout); else the user default
    (``~/.local/share/foveal``)."""
    import os

    from foveal.config import foveal_home

    env = os.environ.get("FOVEAL_HOME")
    if env:
        return Path(env).expanduser(), "from FOVEAL_HOME"
    here = Path.cwd()
    for folder in (here, *here.parents):
        candidate = folder / ".foveal"
        if (candidate / "indexes").is_dir():
            return candidate, "the project's home found in this folder or above it (the one `make run` uses)"
    return foveal_home(), (f"the default: FOVEAL_HOME is unset and no .foveal/ with indexes is in {here} or above it")


def _engine():
    from foveal.engine import Engine

    home, how = find_home()
    _HOME_NOTE[:] = [f"{home} ({how})"]
    return Engine(home)


def _fail(message: str, code: int = 2) -> None:
    if _HOME_NOTE and "does not exist" in message and "index" in message:
        message += f"; looked in {_HOME_NOTE[0]}"
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _print_json(value) -> None:
    """JSON on stdout: indented and coloured on a terminal, plain and never wrapped when piped."""
    if sys.stdout.isatty():
        out.print_json(json.dumps(value, ensure_ascii=False))
    else:
        sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")
        sys.stdout.flush()


def _config_from(path: Optional[Path]) -> Optional[IndexConfig]:
    if path is None:
        return None
    try:
        return IndexConfig.parse(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        _fail(f"cannot read config {path}: {exc}")


@app.command()
def ingest(
    path: Path = typer.Argument(..., help="BEIR corpus.jsonl or .jsonl.gz, a .csv/.tsv or .parquet table, or a "
                                          "folder of .txt, .md, .html and .pdf files"),
    index: str = typer.Option("default", "--index", "-i", help="Index name (created when missing)."),
    id_column: Optional[str] = typer.Option(None, help="Table column with the id (default: _id or id)."),
    title_column: Optional[str] = typer.Option(None, help="Table column with the title (default: title)."),
    text_column: Optional[str] = typer.Option(None, help="Table column with the text (default: text)."),
    timestamp_column: Optional[str] = typer.Option(None, help="Table column with the timestamp (default: "
                                                              "timestamp)."),
    metadata_columns: Optional[str] = typer.Option(None, help="Comma-separated table columns kept as metadata "
                                                              "(default: every other column)."),
    config: Optional[Path] = typer.Option(None, help="JSON file with the index config (for a new index)."),
    batch_size: int = typer.Option(256, min=1, max=100_000, help="Documents per committed batch."),
    if_empty: bool = typer.Option(False, "--if-empty", help="Do nothing when the index already has documents."),
    strict: bool = typer.Option(False, help="Stop at the first malformed record (what came before is kept)."),
    server: Optional[str] = typer.Option(
        None, help="Send the batches to this foveal server as jobs (its workers index them) instead of writing "
                   "here; the API key comes from FOVEAL_API_KEY."),
    in_flight: int = typer.Option(4, min=1, max=256, help="--server: most jobs not done at once."),
    journal: Optional[Path] = typer.Option(
        None, help="--server: the journal of accepted batches (default: one per server, index and file under "
                   "~/.local/state/foveal/ingest); a rerun resumes from it."),
    restart: bool = typer.Option(False, "--restart", help="--server: forget the journal and send everything."),
) -> None:
    """Add or update documents from a file or a folder; unchanged documents are skipped. With --server, stream a
    file to a foveal server as ingest jobs instead: bounded in flight, resumable after an interruption (a rerun
    sends only what the server has not accepted), exit status 1 with a summary when documents were refused."""
    if server is not None:
        _ingest_remote(path, index, server, config, batch_size, in_flight, journal, restart, if_empty)
        return
    from foveal.pipeline import sources
    from foveal.pipeline.ingest import ingest_records, read_jsonl

    if not path.exists():
        _fail(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    is_table = path.is_file() and suffix in sources.TABLE_SUFFIXES
    mapping = sources.ColumnMap(id_column, title_column, text_column, timestamp_column,
                                [c.strip() for c in metadata_columns.split(",") if c.strip()]
                                if metadata_columns is not None else None)
    if not is_table and any(v is not None for v in (id_column, title_column, text_column, timestamp_column,
                                                    metadata_columns)):
        _fail("the --*-column options apply to .csv, .tsv and .parquet files only")
    if not path.is_dir() and not path.is_file():
        _fail(f"{path}: not a file or folder")
    try:
        if path.is_dir():
            records, total = sources.read_folder(path), len(sources.folder_files(path))
            if total == 0:
                _fail(f"{path}: no {', '.join(sources.FOLDER_SUFFIXES)} file in this folder")
        elif suffix in (".parquet", ".pq"):
            records, total = sources.read_parquet(path, mapping), sources.parquet_rows(path)
        elif suffix in (".csv", ".tsv"):
            records, total = sources.read_csv(path, mapping), max(0, (_count_lines(path) or 1) - 1) or None
        else:
            records, total = read_jsonl(path), _count_lines(path)
        # the first record is read now: a table without an id column fails before the index or the bar exist
        records = _peeked(records)
        engine = _engine()
        collection = engine.open_or_create(index, _config_from(config))
        if if_empty and collection.store.count() > 0:
            console.print(f"index {index!r} already has {collection.store.count()} documents; nothing to do")
            return
        started = time.perf_counter()
        with Progress(
            TextColumn("[bold]ingest[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} docs/s"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("ingest", total=total, rate="-")
            done = 0

            def on_batch(n, _result):
                nonlocal done
                done += n
                rate = done / max(1e-9, time.perf_counter() - started)
                progress.update(task, advance=n, rate=f"{rate:,.1f}")

            def on_error(line, message):
                where = path / str(line) if path.is_dir() else f"{path}:{line}"
                from rich.markup import escape

                progress.console.print(f"[yellow]rejected[/] {escape(str(where))}: {escape(message)}", highlight=False)
                progress.update(task, advance=1)

            report = ingest_records(
                collection, records, batch_size=batch_size, strict=strict, on_batch=on_batch, on_error=on_error
            )
        summary = report.summary()
        summary["seconds"] = round(time.perf_counter() - started, 2)
        summary["index"] = index
        console.print(json.dumps(summary), highlight=False)
        engine.close()
        if report.errors:
            raise typer.Exit(1)
    except FovealError as exc:
        _fail(exc.message)


def _ingest_remote(path: Path, index: str, server: str, config: Optional[Path], batch_size: int, in_flight: int,
                   journal: Optional[Path], restart: bool, if_empty: bool) -> None:
    """``foveal ingest --server``: see :mod:`foveal.client.ingest`."""
    import signal

    from foveal.client import APIError, Client, ClientError
    from foveal.client.ingest import RemoteIngest

    if not path.is_file():
        _fail(f"no such file: {path}")
    config_body = None
    if config is not None:
        try:
            config_body = json.loads(config.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            _fail(f"cannot read config {config}: {exc}")
    stop = {"asked": False}

    def ask_stop(_signum, _frame):  # finish the batch being sent and journal it, then stop
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        console.print("[yellow]stopping after the batch in flight; rerun the same command to resume[/]")

    previous = {sig: signal.signal(sig, ask_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Client(server) as client:
            if if_empty:
                try:
                    count = client.index_stats(index).get("documents") or 0
                except APIError as exc:
                    count = 0 if exc.status_code == 404 else _fail(exc.message)
                if count:
                    console.print(f"index {index!r} already has {count} documents; nothing to do")
                    return
            with Progress(TextColumn("[bold]ingest[/] (server jobs)"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[rate]} docs/s"), TimeElapsedColumn(), console=console) as progress:
                task = progress.add_task("ingest", total=None, rate="-")
                started = time.perf_counter()

                def on_progress(done: int, total: int | None) -> None:
                    rate = done / max(1e-9, time.perf_counter() - started)
                    progress.update(task, completed=done, total=total, rate=f"{rate:,.1f}")

                job = RemoteIngest(client, path, index, batch_size=batch_size, max_in_flight=in_flight,
                                   journal=journal, restart=restart, config=config_body, on_progress=on_progress,
                                   should_stop=lambda: stop["asked"])
                report = job.run()
    except APIError as exc:
        _fail(f"{server}: {exc.status_code} {exc.type}: {exc.message}")
    except ClientError as exc:
        _fail(str(exc))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = report.summary()
    console.print(json.dumps(summary), highlight=False, soft_wrap=True)
    if report.interrupted:
        raise typer.Exit(130)
    if report.rejected:
        console.print(f"[bold red]{len(report.rejected)} documents refused[/] (listed in rejected_documents)")
        raise typer.Exit(1)


def _peeked(records):
    """The same records, the first one already read (so that a reader's up-front errors are raised here)."""
    import itertools

    iterator = iter(records)
    try:
        first = next(iterator)
    except StopIteration:
        return iter(())
    return itertools.chain([first], iterator)


def _count_lines(path: Path) -> int | None:
    try:
        if path.suffix == ".gz":
            return None
        with open(path, "rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError:
        return None


@app.command()
def search(
    query: str = typer.Argument(..., help="The query text."),
    index: str = typer.Option("default", "--index", "-i"),
    k: int = typer.Option(10, min=1, max=1000),
    pipeline: Pipeline = typer.Option(Pipeline.hybrid, case_sensitive=False),
    as_json: bool = typer.Option(False, "--json", help="Print the full response as JSON."),
    explain: bool = typer.Option(False, help="Add query analysis and matched terms."),
    rerank: Optional[bool] = typer.Option(None, "--rerank/--no-rerank", help="Pyramid rerank (default: config)."),
) -> None:
    """Search an index."""
    from foveal.pipeline.request import SearchRequest

    if not query.strip():
        _fail("the query is blank (only whitespace): give some text to search for")
    try:
        request = SearchRequest(query=query, k=k, pipeline=pipeline, explain=explain, rerank=rerank)
    except ValueError as exc:
        _fail(str(exc))
    try:
        response = _engine().search(index, request)
    except FovealError as exc:
        _fail(exc.message)
    if as_json:
        _print_json(json.loads(response.model_dump_json()))
        return
    if explain:
        info = response.query_info
        out.print(f"[dim]query terms (BM25): {' '.join(info.get('bm25_terms', [])) or '-'}; fusion: "
                  f"{json.dumps(info.get('fusion'))}; window {info.get('window')}; candidates "
                  f"{info.get('candidates')}[/]", highlight=False, markup=True, soft_wrap=True)
        for name, value in (info.get("stages") or {}).items():
            out.print(f"[dim]query stage {name}: {json.dumps(value)}[/]", highlight=False, soft_wrap=True)
    for hit in response.hits:
        sources = ", ".join(
            f"{name} #{ev['rank']}" for name, ev in hit.evidence.items() if isinstance(ev, dict) and "rank" in ev
        )
        out.print(f"[bold]{hit.rank:>3}. {hit.id}[/]  {hit.score:.4f}  ({sources})", highlight=False)
        if explain:
            for name, value in hit.evidence.items():
                shown = " ".join(value) if name == "matched_terms" else json.dumps(value)
                out.print(f"     [cyan]{name}[/]: {shown}", highlight=False, soft_wrap=True)
        if hit.title:
            out.print(f"     {hit.title}", highlight=False)
        if hit.passage:
            snippet = " ".join(hit.passage.text.split())
            out.print(f"     [dim]{snippet[:200]}{'…' if len(snippet) > 200 else ''}[/]", highlight=False)
    out.print(f"[dim]{len(response.hits)} hits in {response.took_ms:.1f} ms[/]")


@app.command()
def stats(
    index: str = typer.Option("default", "--index", "-i"),
) -> None:
    """Counts in every store (documents, passages, vectors, lexical documents), change-log position and config."""
    try:
        engine = _engine()
        collection = engine.get(index)
        collection.refresh()
        _print_json(collection.stats())
    except FovealError as exc:
        _fail(exc.message)


@app.command("indexes")
def list_indexes() -> None:
    """The names of the indexes under $FOVEAL_HOME, one a line."""
    for name in _engine().list_indexes():
        out.print(name, highlight=False, markup=False)


def _parse_filter(text: Optional[str]):
    """A search filter given as JSON (``{"metadata": {...}, "timestamp": {...}, "ids": [...]}``)."""
    if text is None:
        return None
    from pydantic import ValidationError

    from foveal.pipeline.request import SearchFilter

    try:
        return SearchFilter.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        _fail(f"--where is no JSON: {exc}")
    except ValidationError as exc:
        _fail("--where: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))


@app.command()
def delete(
    ids: Optional[list[str]] = typer.Argument(None, help="Document ids."),
    index: str = typer.Option("default", "--index", "-i"),
    where: Optional[str] = typer.Option(None, help='Delete every document matching a search filter (JSON), e.g. '
                                                   '\'{"metadata": {"topic": "old"}}\'.'),
) -> None:
    """Delete documents by id (ids that are not there are reported as missing), or by a filter (--where)."""
    if bool(ids) == bool(where):
        _fail("give document ids or --where FILTER (one of the two)")
    condition = _parse_filter(where)
    try:
        engine = _engine()
        collection = engine.get(index)
        if condition is not None:
            bounds = condition.timestamp.bounds() if condition.timestamp is not None else None
            result = collection.delete_where(condition.ids, condition.metadata, bounds)
        else:
            result = collection.delete(ids)
        engine.close()
    except FovealError as exc:
        _fail(exc.message)
    _print_json({"deleted": result.deleted, "missing": result.missing})


@app.command()
def update(
    ids: list[str] = typer.Argument(..., help="Document ids."),
    index: str = typer.Option("default", "--index", "-i"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="KEY=VALUE (VALUE read as JSON when it parses, "
                                                               "else as text); repeat for several keys."),
    unset: Optional[list[str]] = typer.Option(None, help="Metadata keys to remove."),
    replace: bool = typer.Option(False, help="Replace the metadata with the --set keys instead of merging."),
    timestamp: Optional[str] = typer.Option(None, help="A new timestamp (ISO 8601 or epoch seconds)."),
) -> None:
    """Change documents' metadata or timestamp without encoding them again."""
    from foveal.documents import parse_timestamp

    metadata: dict = {}
    for pair in set_ or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--set {pair!r}: expected KEY=VALUE")
        try:
            metadata[key] = json.loads(value)
        except json.JSONDecodeError:
            metadata[key] = value
    for key in unset or []:
        metadata[key] = None
    if not metadata and timestamp is None:
        _fail("nothing to change: give --set, --unset or --timestamp")
    try:
        stamp = parse_timestamp(timestamp) if timestamp is not None else None
    except (ValueError, TypeError) as exc:
        _fail(f"--timestamp: {exc}")
    try:
        engine = _engine()
        result = engine.get(index).update_metadata(
            [(i, metadata if (metadata or replace) else None, stamp, False) for i in ids], merge=not replace)
        engine.close()
    except FovealError as exc:
        _fail(exc.message)
    _print_json({"updated": result.updated, "unchanged": result.unchanged, "missing": result.missing})


@app.command("list")
def list_documents(
    index: str = typer.Option("default", "--index", "-i"),
    limit: int = typer.Option(20, min=1, max=100_000, help="Documents to show."),
    after: Optional[int] = typer.Option(None, help="Continue after this position (printed as `next`)."),
) -> None:
    """Documents in storage order: id, title, timestamp (scroll with --after)."""
    from foveal.documents import format_timestamp

    try:
        docs = _engine().get(index).store.list_documents(after if after is not None else -1, limit)
    except FovealError as exc:
        _fail(exc.message)
    for doc in docs:
        sys.stdout.write(f"{doc.id}\t{format_timestamp(doc.timestamp) or '-'}\t{doc.title}\n")
    if len(docs) == limit:
        console.print(f"next: --after {docs[-1].doc_key}", highlight=False)


@app.command()
def export(
    index: str = typer.Option("default", "--index", "-i"),
    out_path: Optional[Path] = typer.Option(None, "--out", help="JSON lines file (default: stdout)."),
    where: Optional[str] = typer.Option(None, help="Only documents matching a search filter (JSON)."),
) -> None:
    """Write documents as JSON lines in the ingest format (``foveal ingest`` reads them back)."""
    from foveal.api.v1 import export_record

    condition = _parse_filter(where)
    try:
        store = _engine().get(index).store
        keys = None
        if condition is not None:
            keys = store.filter_keys(condition.ids, condition.metadata,
                                     condition.timestamp.bounds() if condition.timestamp is not None else None)
        handle = open(out_path, "w", encoding="utf-8") if out_path else sys.stdout
        written, after = 0, -1
        try:
            while True:
                docs = store.list_documents(after, 1000, keys)
                for doc in docs:
                    handle.write(json.dumps(export_record(doc), ensure_ascii=False) + "\n")
                written += len(docs)
                if len(docs) < 1000:
                    break
                after = docs[-1].doc_key
        finally:
            if out_path:
                handle.close()
    except FovealError as exc:
        _fail(exc.message)
    except OSError as exc:
        _fail(f"{out_path}: {exc.strerror or exc}")
    if out_path:
        console.print(f"wrote {written} documents to {out_path}", highlight=False)


@app.command()
def jobs(
    job_id: Optional[str] = typer.Argument(None, help="One job (its errors included)."),
    index: Optional[str] = typer.Option(None, "--index", "-i", help="Only this index's jobs."),
    limit: int = typer.Option(20, min=1, max=1000),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recent ingest jobs of the server's queue (same FOVEAL_HOME, or Redis with FOVEAL_QUEUE=celery)."""
    from foveal.service.jobs import make_queue
    from foveal.service.settings import ServiceSettings

    try:
        home, _how = find_home()
        queue = make_queue(home, ServiceSettings.from_env())
        found = [queue.job(job_id)] if job_id else queue.recent(index, limit)
    except FovealError as exc:
        _fail(exc.message)
    if as_json or job_id:
        _print_json(found[0] if job_id else found)
        return
    if not found:
        console.print(f"no recent job (queue under {home})", highlight=False)
    for job in found:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["created"]))
        out.print(f"{job['id']}  {job['index']:<16} {job['state']:<8} {job['done']}/{job['total']} indexed, "
                  f"{job['failed']} failed  {when}", highlight=False, markup=False, soft_wrap=True)


index_app = typer.Typer(no_args_is_help=True, help="Indexes: list, stats, delete.")
app.add_typer(index_app, name="index")


@index_app.command("list")
def index_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every index with its document count."""
    engine = _engine()
    rows = []
    for name in engine.list_indexes():
        try:
            rows.append({"name": name, "documents": engine.get(name).store.count()})
        except FovealError as exc:
            rows.append({"name": name, "documents": None, "error": exc.message})
    if as_json:
        _print_json(rows)
        return
    if not rows:
        console.print(f"no index in {_HOME_NOTE[0]}", highlight=False)
    for row in rows:
        count = row["documents"] if row["documents"] is not None else f"unavailable: {row['error']}"
        sys.stdout.write(f"{row['name']}\t{count}\n")


@index_app.command("stats")
def index_stats(name: str = typer.Argument("default")) -> None:
    """Counts in every store, change-log position and config (JSON)."""
    stats(index=name)


@index_app.command("delete")
def index_delete(name: str = typer.Argument(...),
                 yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask.")) -> None:
    """Delete an index and its files."""
    if not yes and sys.stdin.isatty() and not typer.confirm(f"delete index {name!r} and all its files?"):
        raise typer.Exit(1)
    drop(name)


@app.command()
def drop(name: str = typer.Argument(..., help="The index to delete, with all its files.")) -> None:
    """Delete an index."""
    try:
        _engine().delete_index(name)
    except FovealError as exc:
        _fail(exc.message)
    console.print(f"deleted index {name!r}", highlight=False)


@app.command()
def run(
    index: str = typer.Option(..., "--index", "-i"),
    queries: Path = typer.Option(..., help="BEIR queries.jsonl"),
    out_path: Path = typer.Option(..., "--out", help="Where to write the TREC run."),
    k: int = typer.Option(100, min=1, max=1000),
    pipeline: Pipeline = typer.Option(Pipeline.hybrid, case_sensitive=False),
    qrels: Optional[Path] = typer.Option(None, help="Only run the queries judged in these qrels."),
    tag: str = typer.Option("foveal"),
) -> None:
    """Run every query and write a TREC run (qid Q0 docid rank score tag)."""
    from foveal.evaluation import read_qrels, read_queries, write_run
    from foveal.pipeline.request import SearchRequest

    try:
        texts = read_queries(queries)
        if qrels is not None:
            judged = read_qrels(qrels)
            texts = {q: t for q, t in texts.items() if q in judged}
        searcher = _engine().pipeline(index)
        ids = list(texts)
        results = {}
        batch = 64
        with Progress(TextColumn("[bold]queries[/]"), BarColumn(), MofNCompleteColumn(), console=console) as progress:
            task = progress.add_task("run", total=len(ids))
            for start in range(0, len(ids), batch):
                chunk = ids[start : start + batch]
                # a blank query is refused by SearchRequest: it retrieves nothing (an empty run line set)
                asked = [q for q in chunk if (texts[q] or "").strip()]
                results.update({q: {} for q in chunk if not (texts[q] or "").strip()})
                requests = [SearchRequest(query=texts[q], k=k, pipeline=pipeline) for q in asked]
                for qid, response in zip(asked, searcher.search_many(requests) if requests else []):
                    results[qid] = {hit.id: hit.score for hit in response.hits}
                progress.update(task, advance=len(chunk))
        write_run(out_path, results, tag)
        console.print(f"wrote {len(results)} queries to {out_path}")
    except FovealError as exc:
        _fail(exc.message)


@app.command("eval")
def evaluate_run(
    run_path: Path = typer.Option(..., "--run"),
    qrels: Path = typer.Option(...),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """nDCG@10, Recall@100 and MRR@10 of a TREC run (trec_eval via pytrec_eval)."""
    from foveal.evaluation import evaluate, read_qrels, read_run

    try:
        scores = evaluate(read_qrels(qrels), read_run(run_path))
    except FovealError as exc:
        _fail(exc.message)
    if as_json:
        _print_json(scores)
        return
    for name, value in scores.items():
        out.print(f"{name:<12} {value:.4f}" if isinstance(value, float) else f"{name:<12} {value}")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000, min=1, max=65535),
) -> None:
    """Serve the REST API. Without API keys (FOVEAL_API_KEYS / FOVEAL_API_KEYS_FILE) only on a loopback address,
    unless FOVEAL_ALLOW_OPEN=1."""
    import uvicorn

    from foveal.api.app import create_app
    from foveal.api.auth import check_binding
    from foveal.service.settings import ServiceSettings

    try:
        settings = ServiceSettings.from_env()
        check_binding(host, settings)  # before any model or index is loaded
        application = create_app(settings=settings, freeze_heap=True)
    except FovealError as exc:
        _fail(exc.message)
    from foveal import logs

    logs.configure()  # the access log and the job log as JSON lines on stderr
    # foveal.access writes the one access line per request (JSON, with the request id and the route template);
    # uvicorn's own access log would be a second, plain line for each
    uvicorn.run(application, host=host, port=port, log_level="info", access_log=False)


@app.command()
def worker(
    concurrency: int = typer.Option(1, min=1, max=64, help="Worker processes (Celery prefork) or threads (embedded)."),
    queues: Optional[str] = typer.Option(None, help="Celery queues to consume (default: FOVEAL_CELERY_QUEUE)."),
    loglevel: str = typer.Option("INFO"),
) -> None:
    """Run an ingest worker: a Celery worker on Redis (FOVEAL_QUEUE=celery), or the embedded SQLite queue's."""
    from foveal.service.settings import ServiceSettings

    try:
        settings = ServiceSettings.from_env()
    except FovealError as exc:
        _fail(exc.message)
    if settings.queue == "celery":
        from foveal.service.celery_app import run_worker

        run_worker(concurrency=concurrency, queues=queues, loglevel=loglevel)
        return
    import threading

    from foveal.service.jobs import EmbeddedQueue
    from foveal.service.worker import worker_engine

    from foveal import logs

    logs.configure(getattr(logging, loglevel.upper(), logging.INFO))
    queue = EmbeddedQueue(worker_engine().home, settings)
    stop = threading.Event()
    threads = [threading.Thread(target=queue.work, args=(worker_engine(), stop), daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    console.print(f"embedded ingest worker on {queue.path} ({concurrency} threads); Ctrl-C stops")
    try:
        while any(t.is_alive() for t in threads):
            threads[0].join(1.0)
    except KeyboardInterrupt:
        stop.set()


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question to research."),
    index: str = typer.Option("default", "--index", "-i"),
    planner: str = typer.Option("rule", help="rule (no model) or llm (FOVEAL_LLM_URL / _MODEL / _API_KEY)."),
    concurrency: int = typer.Option(4, min=1, max=16, help="Searcher nodes running at once."),
    node_timeout: float = typer.Option(60.0, min=0.1, help="Seconds per searcher node."),
    select: int = typer.Option(4, min=1, max=10, help="Passages each searcher node may cite (rule planner: a question asked whole gets 2*select-2, each of its two bridges 1)."),
    as_json: bool = typer.Option(False, "--json", help="Print every event as one JSON line."),
) -> None:
    """MindSearch-style agent: plan sub-questions, search them in parallel, answer with citations."""
    import asyncio

    from rich.markup import escape

    from foveal.agents import AgentSettings, build_agent

    if planner not in ("rule", "llm"):
        _fail(f"unknown planner {planner!r} (allowed: rule, llm)")
    if not question.strip():
        _fail("the question is blank (only whitespace): give a question to research")
    try:
        agent = build_agent(_engine().pipeline(index), planner=planner, select=select,  # type: ignore[arg-type]
                            settings=AgentSettings(concurrency=concurrency, node_timeout=node_timeout))
    except FovealError as exc:
        _fail(exc.message)

    marks = {"not_started": "[dim]○[/]", "running": "[yellow]▶[/]", "done": "[green]✓[/]", "failed": "[red]✗[/]"}
    seen: dict[str, str] = {}
    final: dict = {}

    async def consume() -> None:
        async for event in agent.stream(question):
            kind, data = event["event"], event["data"]
            if as_json:
                out.print(json.dumps(event, ensure_ascii=False), highlight=False, soft_wrap=True)
            elif kind == "graph":
                edges = data["graph"]["edges"]
                for name, node in data["graph"]["nodes"].items():
                    if seen.get(name) == node["state"] or node["type"] == "root":
                        continue
                    if name not in seen:
                        parents = ", ".join(e["start"] for e in edges if e["end"] == name) or "root"
                        out.print(f"[bold]+ {name}[/] [dim]({node['type']}, after {parents})[/] {escape(node['content'])}",
                                  highlight=False)
                    if node["state"] != "not_started":
                        out.print(f"  {marks[node['state']]} {name} {node['state']}", highlight=False)
                    seen[name] = node["state"]
            elif kind == "node" and data["node"]["state"] == "failed":
                out.print(f"  [red]{data['node']['name']} failed:[/] {escape(str(data['node']['error']))}", highlight=False)
            elif kind == "error":
                console.print(f"[bold red]error:[/] {escape(data['message'])}", highlight=False)
            if kind == "final":
                final.update(data)

    try:
        asyncio.run(consume())
    finally:
        agent.close()
    if not as_json:
        out.print()
        out.print(final.get("answer") or "(no answer)", highlight=False, markup=False)
        if final.get("references"):
            out.print()
        for number, ref in final.get("references", {}).items():
            out.print(f"[bold]\\[[{number}]][/] {escape(ref['doc_id'])}  {escape(ref['title'])}", highlight=False)
    if final.get("status") == "error":
        raise typer.Exit(1)


train_app = typer.Typer(no_args_is_help=True, help="Train research stages.")
app.add_typer(train_app, name="train")


@train_app.command("rerank")
def train_rerank_command(
    data: Path = typer.Option(Path("../shared/data/scifact"), help="BEIR folder with corpus, queries, qrels/train.tsv."),
    name: Optional[str] = typer.Option(None, "--name", help="Register the model under this name in FOVEAL_MODELS_DIR "
                                       "(default: rerank-<UTC date>-<time>)."),
    force: bool = typer.Option(False, "--force", help="Replace a model already registered under --name."),
    out_path: Optional[Path] = typer.Option(None, "--out", help="Also copy the trained model to this folder."),
    index: str = typer.Option("scifact", "--index", "-i", help="Index holding the corpus (hard negatives)."),
    home: Optional[Path] = typer.Option(None, help="FOVEAL_HOME holding the index (default: $FOVEAL_HOME)."),
    lower_layers: int = typer.Option(4, min=0, max=6, help="Layers that encode (query, title) and summary apart."),
    epochs: int = typer.Option(3, min=1, max=100),
    negatives: int = typer.Option(3, min=1, max=30, help="Hard negatives per query and step."),
    batch_queries: int = typer.Option(4, min=1, max=256),
    max_minutes: float = typer.Option(25.0, min=0.1, help="Stop training after this long (the whole run stays under 30 min)."),
    seed: int = typer.Option(13),
    also: Optional[list[str]] = typer.Option(None, "--also", help="FOLDER=INDEX: another BEIR folder whose judged "
                                             "queries train too, and the index holding its corpus (repeatable)."),
    also_split: str = typer.Option("train", "--also-split", help="The qrels split read from every --also folder."),
) -> None:
    """Fine-tune the Pyramid-ERNIE reranker (human-anchored loss) and fit the score combination. The model is
    registered in FOVEAL_MODELS_DIR (default $FOVEAL_HOME/models) under --name; an index config then names it:
    {"rerank": {"model": "<name>"}}. With --also, it trains on several collections at once (what keeps it from
    hurting collections it never saw: docs/robust.md)."""
    import os
    import shutil

    from foveal.config import foveal_home, models_dir
    from foveal.models_dir import default_model_name, register_model
    from foveal.rerank.train import TrainOptions, train_rerank

    name = name or default_model_name("rerank")
    pairs: list[tuple[Path, str]] = []
    for item in also or []:
        folder, sep, other = item.rpartition("=")
        if not sep or not folder or not other:
            _fail(f"--also {item!r}: expected FOLDER=INDEX")
        pairs.append((Path(folder), other))
    options = TrainOptions(lower_layers=lower_layers, epochs=epochs, negatives=negatives,
                           batch_queries=batch_queries, max_minutes=max_minutes, seed=seed)
    cache_dir = Path(home or foveal_home()) / "cache" / "train-rerank"
    records: list[dict] = []

    def write(folder: Path) -> None:
        records.append(train_rerank(data, folder, home=home, index=index, options=options, cache_dir=cache_dir,
                                    log=lambda m: console.print(m, highlight=False), also=pairs,
                                    also_split=also_split))

    # the models folder of the home trained on (FOVEAL_MODELS_DIR wins), where a server on that home looks
    root = models_dir() if home is None or os.environ.get("FOVEAL_MODELS_DIR") else Path(home) / "models"
    try:
        folder = register_model(write, name, force=force, root=root)
    except FovealError as exc:
        _fail(exc.message)
    if out_path is not None:
        shutil.copytree(folder, out_path, dirs_exist_ok=True)
    record = {k: v for k, v in records[0].items() if k not in ("dev_ndcg10_curve", "dev_ids")}
    console.print(f"registered model {name!r} in {root}; use it in an index config: "
                  f'{{"rerank": {{"model": "{name}"}}}}', highlight=False, soft_wrap=True)
    out.print(json.dumps({"model": name, "path": str(folder), **record}), highlight=False, soft_wrap=True)


snapshot_app = typer.Typer(no_args_is_help=True, help="Snapshots of indexes (see README, Snapshots).")
app.add_typer(snapshot_app, name="snapshot")
SNAPSHOT_DIR = typer.Option(None, "--dir", help="Snapshot folder (default: $FOVEAL_SNAPSHOT_DIR, else "
                                                "$FOVEAL_HOME/snapshots).")


def _snapshots(directory: Optional[Path]):
    from foveal.snapshots import Snapshots

    return Snapshots(_engine(), directory)


@snapshot_app.command("create")
def snapshot_create(
    index: str = typer.Argument(..., help="The index to snapshot."),
    name: Optional[str] = typer.Option(None, "--name", help="Snapshot name (default: <index>-<UTC time>)."),
    directory: Optional[Path] = SNAPSHOT_DIR,
) -> None:
    """Snapshot an index at one change-log position (writes may continue meanwhile)."""
    try:
        _print_json((_snapshots(directory).create(index, name)))
    except FovealError as exc:
        _fail(exc.message)


@snapshot_app.command("list")
def snapshot_list(
    index: Optional[str] = typer.Argument(None, help="Only snapshots of this index."),
    directory: Optional[Path] = SNAPSHOT_DIR,
) -> None:
    """Complete snapshots, oldest first, one JSON object a line."""
    try:
        for summary in _snapshots(directory).list(index):
            _print_json((summary))
    except FovealError as exc:
        _fail(exc.message)


@snapshot_app.command("restore")
def snapshot_restore(
    name: str = typer.Argument(..., help="The snapshot to restore."),
    as_index: Optional[str] = typer.Option(None, "--as", help="Restore into this index (default: the original)."),
    directory: Optional[Path] = SNAPSHOT_DIR,
) -> None:
    """Verify a snapshot's checksums and swap it in atomically (queued writes to the old index are fenced)."""
    try:
        _print_json((_snapshots(directory).restore(name, as_index)))
    except FovealError as exc:
        _fail(exc.message)


@snapshot_app.command("delete")
def snapshot_delete(
    name: str = typer.Argument(..., help="The snapshot to delete."),
    directory: Optional[Path] = SNAPSHOT_DIR,
) -> None:
    """Delete a snapshot."""
    try:
        _snapshots(directory).delete(name)
    except FovealError as exc:
        _fail(exc.message)
    console.print(f"deleted snapshot {name!r}", highlight=False)


@train_app.command("paraformer")
def train_paraformer_command(
    data: Path = typer.Option(Path("../shared/data/scifact"), help="BEIR folder with corpus, queries, qrels/train.tsv."),
    name: Optional[str] = typer.Option(None, "--name", help="Register the checkpoint under this name in "
                                       "FOVEAL_MODELS_DIR (default: paraformer-<UTC date>-<time>)."),
    force: bool = typer.Option(False, "--force", help="Replace a model already registered under --name."),
    out_path: Optional[Path] = typer.Option(None, "--out", help="Also copy the checkpoint to this folder."),
    encoder: str = typer.Option("all-MiniLM-L6-v2", help="The frozen sentence encoder (a model name)."),
    epochs: int = typer.Option(2, min=1, max=200),
    negatives_from_top: int = typer.Option(10, min=1, max=100, help="BM25 top-n whose unjudged documents are negatives."),
    max_sentences: int = typer.Option(64, min=1, max=512, help="Sentences attended to per document (the first ones)."),
    max_queries: Optional[int] = typer.Option(None, min=2, help="Use a seeded sample of the train queries."),
    sentences: str = typer.Option("faithful", help="Sentence vectors to train on: 'faithful' (each sentence encoded "
                                  "on its own, as the paper) or 'pooled' (spans pooled from the passage pass, as an "
                                  "index with sentence_vectors.mode pooled stores them)."),
    seed: int = typer.Option(13),
    index: Optional[str] = typer.Option(None, "--index", help="Fit the score combination over this index's own "
                                        "search (hybrid as it is served, rerank off) instead of an in-memory BM25: "
                                        "the weight then fits the pipeline the head will run behind. The index must "
                                        "hold --data's corpus."),
) -> None:
    """Train the Paraformer head (encoder frozen) and fit its score combination on held-out train queries. The
    checkpoint is registered in FOVEAL_MODELS_DIR under --name (printed)."""
    import shutil

    from foveal.models_dir import default_model_name, register_model
    from foveal.rerank.paraformer import ParaformerTrainOptions, train_paraformer

    name = name or default_model_name("paraformer")
    options = ParaformerTrainOptions(encoder=encoder, epochs=epochs, negatives_from_top=negatives_from_top,
                                     max_sentences=max_sentences, max_queries=max_queries, seed=seed,
                                     sentences=sentences)
    first_stage = None if index is None else _served_first_stage(index)
    records: list[dict] = []
    try:
        folder = register_model(lambda f: records.append(
            train_paraformer(data, f, options, log=lambda m: console.print(m, highlight=False),
                             first_stage=first_stage)), name, force=force)
    except FovealError as exc:
        _fail(exc.message)
    if out_path is not None:
        shutil.copytree(folder, out_path, dirs_exist_ok=True)
    console.print(f"registered model {name!r} in {folder.parent}", highlight=False, soft_wrap=True)
    record = {k: v for k, v in records[0].items() if k not in ("dev_ndcg10_curve", "dev_ids")}
    out.print(json.dumps({"model": name, "path": str(folder), **record}), soft_wrap=True, highlight=False)


def _served_first_stage(index: str):
    """``(query, n) -> [(doc id, score), ...]``: the index's own hybrid search as it is served (rerank off)."""
    from foveal.pipeline.request import SearchRequest

    try:
        searcher = _engine().pipeline(index)
    except FovealError as exc:
        _fail(exc.message)

    def first_stage(query: str, n: int) -> list[tuple[str, float]]:
        response = searcher.search(SearchRequest(query=query, k=n, pipeline="hybrid", rerank=False,
                                                 fields=["evidence"], text="none"))
        return [(hit.id, hit.score) for hit in response.hits]

    return first_stage


@train_app.command("xpool")
def train_xpool_command(
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="JSONL of item/text pairs, one per line: "
                                         '{"vector": [text vector], "vectors": [[frame], ...], "item": optional key}.'),
    data: Optional[Path] = typer.Option(None, "--data", help="Instead of --pairs: a BEIR folder; each train query is "
                                        "paired with each relevant document as the set of its sentence vectors."),
    name: Optional[str] = typer.Option(None, "--name", help="Register the checkpoint under this name in "
                                       "FOVEAL_MODELS_DIR (default: xpool-<UTC date>-<time>)."),
    force: bool = typer.Option(False, "--force", help="Replace a model already registered under --name."),
    encoder: str = typer.Option("all-MiniLM-L6-v2", help="--data: the sentence encoder; --pairs: recorded only "
                                "(what made the vectors)."),
    epochs: int = typer.Option(10, min=1, max=200),
    batch_size: int = typer.Option(32, min=2, max=1024),
    learning_rate: float = typer.Option(1e-4, min=1e-7, max=1.0),
    dropout: float = typer.Option(0.3, min=0.0, max=0.9),
    heads: int = typer.Option(1, min=1, max=64),
    window: int = typer.Option(50, min=1, max=1000, help="First-stage candidates an index reranks by default."),
    max_queries: Optional[int] = typer.Option(None, min=2, help="--data: a seeded sample of the train queries."),
    seed: int = typer.Option(24),
) -> None:
    """Train X-Pool (text-conditioned pooling over an item's vectors) with symmetric InfoNCE and a learned, clamped
    logit scale. The checkpoint is registered in FOVEAL_MODELS_DIR under --name (printed); an index uses it with
    ``"xpool": {"model": "<name>", "enabled": true}``."""
    from foveal.models_dir import default_model_name, register_model
    from foveal.rerank.xpool import XPoolTrainOptions, read_pairs, train_from_beir, train_xpool

    if (pairs is None) == (data is None):
        _fail("give one of --pairs FILE.jsonl or --data BEIR_FOLDER")
    name = name or default_model_name("xpool")
    options = XPoolTrainOptions(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, dropout=dropout,
                                heads=heads, window=window, seed=seed)
    log = lambda m: console.print(m, highlight=False)  # noqa: E731
    records: list[dict] = []

    def write(folder: Path) -> None:
        if pairs is not None:
            texts, items = read_pairs(pairs)
            model, record = train_xpool(texts, items, options, encoder=encoder, log=log)
            record["pairs_file"] = str(pairs)
        else:
            model, record = train_from_beir(data, options, encoder, max_queries=max_queries, log=log)
        model.save(folder)
        (folder / "train.json").write_text(json.dumps(record, indent=2))
        records.append(record)

    try:
        folder = register_model(write, name, force=force)
    except FovealError as exc:
        _fail(exc.message)
    console.print(f"registered model {name!r} in {folder.parent}", highlight=False, soft_wrap=True)
    record = records[0]
    out.print(json.dumps({"model": name, "path": str(folder), "pairs": record["pairs"],
                          "train_seconds": record["train_seconds"], "epochs": record["epochs"]}),
              soft_wrap=True, highlight=False)


@train_app.command("lexsem")
def train_lexsem_command(
    data: Path = typer.Option(Path("../shared/data/scifact"), help="BEIR folder with corpus, queries, qrels/train.tsv."),
    name: Optional[str] = typer.Option(None, "--name", help="Register the encoder under this name in FOVEAL_MODELS_DIR "
                                       "(the modulation weights as NAME-modulation; default: lexsem-<UTC date>-<time>)."),
    force: bool = typer.Option(False, "--force", help="Replace models already registered under those names."),
    out_path: Optional[Path] = typer.Option(None, "--out",
                                            help="Also copy encoder/ (sentence-transformers) and lexsem/ (modulation) here."),
    encoder: str = typer.Option("all-MiniLM-L6-v2", help="The backbone to fine-tune (a model name)."),
    paradigm: str = typer.Option("slr", help="Vocabulary vector: slr, llr or clr."),
    epochs: int = typer.Option(1, min=1, max=100),
    batch_size: int = typer.Option(16, min=1, max=1024),
    learning_rate: float = typer.Option(1e-5, min=0.0),
    passage_max_length: int = typer.Option(256, min=8, max=512),
    max_queries: Optional[int] = typer.Option(None, min=2, help="Use a seeded sample of the train queries."),
    max_minutes: float = typer.Option(45.0, min=0.01, help="Stop training after this long."),
    seed: int = typer.Option(13),
) -> None:
    """Contrastive fine-tuning with query-side LexSemBridge modulation (InfoNCE, T = 0.02, BM25 hard negatives).
    The fine-tuned encoder is registered in FOVEAL_MODELS_DIR as NAME ({"encoder": {"model": "NAME"}}), the
    modulation weights as NAME-modulation."""
    import shutil
    import tempfile

    from foveal.encoders.lexsem import Paradigm
    from foveal.encoders.lexsem_train import LexSemTrainOptions, train_lexsem
    from foveal.models_dir import check_available, default_model_name, move_into, register_model

    name = name or default_model_name("lexsem")
    try:
        options = LexSemTrainOptions(
            encoder=encoder, paradigm=Paradigm.parse(paradigm).value, epochs=epochs, batch_size=batch_size,
            learning_rate=learning_rate, passage_max_length=passage_max_length, max_queries=max_queries,
            max_minutes=max_minutes, seed=seed,
        )
        root = check_available(name, force=force)
        check_available(f"{name}-modulation", force=force, root=root)
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{name}.train-", dir=root))  # same file system: renames
        try:
            record = train_lexsem(data, scratch, options, log=lambda m: console.print(m, highlight=False))
            if out_path is not None:
                shutil.copytree(scratch, out_path, dirs_exist_ok=True)
            folder = register_model(lambda f: move_into(scratch / "encoder", f), name, force=force, root=root)
            register_model(lambda f: move_into(scratch / "lexsem", f), f"{name}-modulation", force=force, root=root)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    except FovealError as exc:
        _fail(exc.message)
    console.print(f"registered models {name!r} (encoder) and {name + '-modulation'!r} in {root}; use "
                  f'{{"encoder": {{"model": "{name}"}}}}', highlight=False, soft_wrap=True)
    out.print(json.dumps({"model": name, "modulation": f"{name}-modulation", "path": str(folder),
                          **{k: v for k, v in record.items() if k != "options"}}), soft_wrap=True, highlight=False)

@train_app.command("events")
def train_events_command(
    data: Path = typer.Option(Path("../shared/data/realtimeqa-2020-2022"),
                              help="RealTimeQA-style folder: dated queries, qrels/test.tsv, news as the event feed."),
    name: Optional[str] = typer.Option(None, "--name", help="Register the layer under this name in FOVEAL_MODELS_DIR "
                                       "(default: events-<UTC date>-<time>); use it as {\"events\": {\"model\": NAME}}."),
    force: bool = typer.Option(False, "--force", help="Replace a model already registered under --name."),
    until: str = typer.Option("2021-12-31", help="Train on questions dated up to this day (later ones stay for reporting)."),
    encoder: str = typer.Option("all-MiniLM-L6-v2", help="The frozen encoder (the index's)."),
    epochs: int = typer.Option(30, min=1, max=1000),
    gate: float = typer.Option(0.4, min=-1.0, max=1.0, help="Train on questions whose best event cosine reaches this."),
    half_life_days: float = typer.Option(14.0, min=0.001),
    event_weight: float = typer.Option(0.5, min=0.0, help="Weight of the event (query-event matching) task."),
    seed: int = typer.Option(13),
) -> None:
    """Train the event stage's cross-attention layer (multi-task: InfoNCE of the time-context query against its
    evidence + query-event matching). Registered in FOVEAL_MODELS_DIR under --name (printed)."""
    from foveal.events_train import EventsTrainOptions, train_events
    from foveal.models_dir import default_model_name, register_model

    name = name or default_model_name("events")
    options = EventsTrainOptions(encoder=encoder, until=until, epochs=epochs, gate=gate,
                                 half_life_days=half_life_days, event_weight=event_weight, seed=seed)
    records: list[dict] = []
    try:
        folder = register_model(lambda f: records.append(
            train_events(data, f, options, log=lambda m: console.print(m, highlight=False))), name, force=force)
    except FovealError as exc:
        _fail(exc.message)
    console.print(f"registered model {name!r} in {folder.parent}", highlight=False, soft_wrap=True)
    out.print(json.dumps({"model": name, "path": str(folder), **records[0]}), soft_wrap=True, highlight=False)


events_app = typer.Typer(no_args_is_help=True, help="An index's event store (event-aware queries, docs/events.md).")
app.add_typer(events_app, name="events")


@events_app.command("add")
def events_add(
    path: Path = typer.Argument(..., help="JSONL: one event a line, {\"_id\", \"title\", \"text\", \"source\", \"timestamp\"}."),
    index: str = typer.Option("default", "--index", "-i", help="An existing index."),
    batch_size: int = typer.Option(256, min=1, max=10_000, help="Events per committed batch."),
) -> None:
    """Add or replace events from a file. A malformed line (no timestamp, a date that does not parse) is reported
    with its line number and skipped; every good batch is committed (exit status 1 when any line was refused)."""
    from foveal.events import parse_event
    from foveal.pipeline.ingest import read_jsonl

    totals = {"added": 0, "updated": 0, "unchanged": 0, "expired": 0, "rejected": 0}
    try:
        engine = _engine()
        collection = engine.get(index)
        collection._event_store()
        batch = []

        def flush() -> None:
            if batch:
                for key, ids in collection.add_events(batch).items():
                    totals[key] += len(ids)
                batch.clear()

        for line, raw in read_jsonl(path):
            try:
                if isinstance(raw, Exception):
                    raise raw
                batch.append(parse_event(raw, line=line))
            except FovealError as exc:
                totals["rejected"] += 1
                reason = getattr(exc, "reason", exc.message)
                console.print(f"[yellow]rejected[/] {path} line {line}: {reason}", highlight=False, soft_wrap=True)
                continue
            if len(batch) >= batch_size:
                flush()
        flush()
        engine.close()
    except FovealError as exc:
        _fail(exc.message)
    out.print(json.dumps(totals), highlight=False)
    if totals["rejected"]:
        raise typer.Exit(1)


@events_app.command("list")
def events_list(
    index: str = typer.Option("default", "--index", "-i"),
    after: int = typer.Option(0, min=0, help="Continue after this position (the next_after of a previous page)."),
    limit: int = typer.Option(100, min=1, max=100_000),
) -> None:
    """Print the index's events as JSONL, oldest added first; the last line names the next page when there is one."""
    from foveal.events import event_out

    try:
        engine = _engine()
        events = engine.get(index)._event_store().list_events(after, limit + 1)
        engine.close()
    except FovealError as exc:
        _fail(exc.message)
    for event in events[:limit]:
        out.print(json.dumps(event_out(event), ensure_ascii=False), highlight=False, soft_wrap=True)
    if len(events) > limit:
        console.print(f"more: --after {events[limit - 1].event_key}", highlight=False)


@events_app.command("delete")
def events_delete(
    ids: list[str] = typer.Argument(..., help="Event ids."),
    index: str = typer.Option("default", "--index", "-i"),
) -> None:
    """Delete events by id (ids that are not there are reported as missing)."""
    try:
        engine = _engine()
        result = engine.get(index).delete_events(ids)
        engine.close()
    except FovealError as exc:
        _fail(exc.message)
    out.print(json.dumps(result), highlight=False)


@app.command()
def reindex(
    source: str = typer.Argument(..., help="The index (or alias) to copy, read from its document store."),
    into: str = typer.Option(..., "--into", help="The new index (created; a re-run resumes it)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="IndexConfig JSON for the new index "
                                          "(default: the source's)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, max=10_000, help="Documents per committed batch."),
    pause: float = typer.Option(0.0, "--pause", min=0.0, max=60.0, help="Seconds to wait between batches (spares a "
                                "serving machine)."),
) -> None:
    """Re-encode SOURCE's documents into a new index (another encoder, segmentation, backends): from the document
    store, no files re-read; resumable (run the same command again after an interruption). Then move an alias to
    it: foveal alias set NAME TARGET."""
    from foveal.reindex import reindex as run_reindex

    cfg = _config_from(config)
    try:
        engine = _engine()
        summary = run_reindex(engine, source, into, cfg, batch_size=batch_size, pause_s=pause,
                              log=lambda m: console.print(m, highlight=False))
        engine.close()
    except FovealError as exc:
        _fail(exc.message)
    out.print(json.dumps(summary), highlight=False, soft_wrap=True)


alias_app = typer.Typer(no_args_is_help=True, help="Index aliases: a name that points to an index, moved atomically.")
app.add_typer(alias_app, name="alias")


@alias_app.command("set")
def alias_set(
    name: str = typer.Argument(..., help="The alias."),
    index: str = typer.Argument(..., help="The index it points to (a swap when the alias exists)."),
) -> None:
    """Create an alias or move it to another index in one atomic step."""
    try:
        previous = _engine().set_alias(name, index)
    except FovealError as exc:
        _fail(exc.message)
    out.print(json.dumps({"alias": name, "index": index, "previous": previous}), highlight=False)


@alias_app.command("remove")
def alias_remove(name: str = typer.Argument(..., help="The alias.")) -> None:
    """Remove an alias (the index stays)."""
    try:
        index = _engine().remove_alias(name)
    except FovealError as exc:
        _fail(exc.message)
    out.print(json.dumps({"alias": name, "index": index}), highlight=False)


@alias_app.command("list")
def alias_list() -> None:
    """Every alias and its index, as JSON."""
    out.print(json.dumps(_engine().list_aliases()), highlight=False)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()

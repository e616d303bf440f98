"""Structured logs: every record of the ``foveal`` loggers as one JSON line on stderr.

``foveal serve`` and ``foveal worker`` install this. A record whose message is itself a JSON object (the access log
``foveal.access``, one line per request; the job log ``foveal.jobs``, one line per ingest task) is merged into the
line rather than quoted; other records carry their text as ``message``. Every line has ``time`` (UTC, ISO 8601),
``level``, ``logger`` and ``request_id`` (the request being served, see :mod:`foveal.api.middleware`; for a job
line, the request that queued it). ``FOVEAL_LOG_FORMAT=text`` keeps plain text lines instead.

Example line::

    {"time": "2026-12-04T15:02:11.412Z", "level": "INFO", "logger": "foveal.access", "request_id": "9f0c...",
     "method": "POST", "route": "/v1/indexes/{name}/search", "status": 200, "duration_ms": 14.2, "key": null}
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", None),
        }
        message = record.getMessage()
        parsed = None
        if message.startswith("{"):
            try:
                parsed = json.loads(message)
            except ValueError:
                parsed = None
        if isinstance(parsed, dict):
            # the record's own request id (a job line's is the upsert's) wins over the context's
            line.update({k: v for k, v in parsed.items() if v is not None or k not in line})
        else:
            line["message"] = message
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def _with_request_id(record: logging.LogRecord) -> bool:
    if not hasattr(record, "request_id"):
        from foveal.api.middleware import current_request_id

        record.request_id = current_request_id.get()
    return True


class _CurrentStderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a line is written, not the stream it was at set-up (a test
    harness, a daemoniser or a reloader may replace it; writing to a closed one is a logging error per line)."""

    _chosen = None  # a stream set explicitly (``setStream``) instead of the current stderr

    @property
    def stream(self):
        return self._chosen if self._chosen is not None else sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        self._chosen = None if value is sys.stderr else value


def configure(level: int = logging.INFO, stream=None) -> logging.Handler:
    """Send the ``foveal`` loggers to ``stream`` (stderr) as JSON lines (idempotent: one handler per process)."""
    logger = logging.getLogger("foveal")
    for handler in logger.handlers:
        if getattr(handler, "_foveal_json", False):
            return handler
    handler = logging.StreamHandler(stream) if stream is not None else _CurrentStderr()
    if os.environ.get("FOVEAL_LOG_FORMAT", "json").lower() == "text":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    handler.addFilter(_with_request_id)
    handler._foveal_json = True
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler

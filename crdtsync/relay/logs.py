"""The relay's logs: one JSON object per line on stdout, under the ``crdtsync`` logger.

Every relay module logs to ``crdtsync.relay`` (:data:`log`) with its fields in
``extra={"fields": {...}}``; :func:`setup_logging` (``crdtsync relay`` calls it)
formats each record as ``{"ts": ..., "level": ..., "event": ..., <fields>}``.
Embedders that configure logging themselves get ordinary records.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

__all__ = ["JsonFormatter", "log", "setup_logging"]

#: The logger of every relay module.
log = logging.getLogger("crdtsync.relay")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, event, and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (fields that are None are left out)."""
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        # ``extra={"fields": ...}`` lands in the record's attributes.
        fields = record.__dict__.get("fields")
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if v is not None})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str) -> None:
    """Log every ``crdtsync`` record at ``level`` and above as JSON lines on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("crdtsync")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False

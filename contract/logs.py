"""The one logging set-up of fcl's processes (`fcl trainer`, `fcl web`, `fcl serve`, and `fcl
streams` through Faust's `logging_config`): one line per record on stderr, in text (the time, the
process id, the level and the logger) or, with `FCL_LOG_FORMAT=json`, one JSON object per line,
at `FCL_LOG_LEVEL`.

Every record logged while a job runs (in its task, `bind_job`) carries the job's `job_id`,
`dataset_id` and `model_type`: as fields of the JSON object, and after the message in text.

The standard library's logging with a formatter of our own, not structlog: every library fcl
runs on (Faust, aiokafka, aiohttp, SQLAlchemy) logs through the standard library, and their lines
must come out in the same format; a formatter and a filter do that with nothing added.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s%(job_suffix)s"
JOB_FIELDS = ("job_id", "dataset_id", "model_type")
_JOB: ContextVar[dict[str, str] | None] = ContextVar("fcl_job", default=None)


def bind_job(job_id: object, dataset_id: str, model_type: str) -> Token[dict[str, str] | None]:
    """Records logged from now on in this task (and the tasks it starts) name the job."""
    return _JOB.set({"job_id": str(job_id), "dataset_id": dataset_id, "model_type": model_type})


class JobFields(logging.Filter):
    """Adds the bound job's fields to a record (and `job_suffix`, their text form)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _JOB.get()
        for name in JOB_FIELDS:
            if fields is not None and not hasattr(record, name):
                setattr(record, name, fields[name])
        bound = [f"{name}={getattr(record, name)}" for name in JOB_FIELDS if hasattr(record, name)]
        record.job_suffix = f" [{' '.join(bound)}]" if bound else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (RFC 3339, UTC), level, logger, pid, message, the job's
    fields when bound, and the exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for name in JOB_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def handler(log_format: str = "text") -> logging.Handler:
    """The stderr handler of the format, with the job filter."""
    out = logging.StreamHandler(sys.stderr)
    out.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(FORMAT))
    out.addFilter(JobFields())
    return out


def faust_level(level: str) -> str:
    """FCL_LOG_LEVEL in the words Faust's `--loglevel` takes (it refuses "warning" and "critical")."""
    return {"WARNING": "warn", "CRITICAL": "crit"}.get(level.upper(), level.lower())


def dict_config(log_format: str = "text", level: str = "INFO") -> dict[str, Any]:
    """The same set-up as a `logging.config.dictConfig` (what Faust's `logging_config` takes)."""
    formatter: dict[str, Any] = {"()": JsonFormatter} if log_format == "json" else {"format": FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"job": {"()": JobFields}},
        "formatters": {"fcl": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "fcl",
                "filters": ["job"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
    }


def configure(*, log_format: str = "text", level: str = "INFO", quiet: Iterable[str] = ()) -> None:
    """`level` and above to stderr in `log_format`; the loggers in `quiet` (chatty libraries) only
    from WARNING."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler(log_format))
    root.setLevel(level)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)

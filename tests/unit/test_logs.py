"""The one logging set-up (contract.logs): text or one JSON object per line, the level, and the
job's fields on every record logged while its task runs (and on no other)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid

import pytest

from fcl.contract import logs


@pytest.fixture
def captured() -> logging.Logger:
    logger = logging.getLogger(f"test-logs-{uuid.uuid4().hex[:6]}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def attach(logger: logging.Logger, log_format: str) -> io.StringIO:
    out = io.StringIO()
    handler = logs.handler(log_format)
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    logger.addHandler(handler)
    return out


async def test_json_lines_carry_the_job_of_the_task_that_logged_them(captured: logging.Logger) -> None:
    out = attach(captured, "json")
    job_id = uuid.uuid4()

    async def job() -> None:
        logs.bind_job(job_id, "ds-1", "goal")
        captured.info("trained %s", "v3")
        try:
            raise ValueError("boom")
        except ValueError:
            captured.exception("failed")

    await asyncio.create_task(job())
    captured.warning("outside any job")
    first, second, third = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "trained v3" and first["level"] == "INFO" and first["logger"] == captured.name
    assert (first["job_id"], first["dataset_id"], first["model_type"]) == (str(job_id), "ds-1", "goal")
    assert first["time"].endswith("+00:00") and isinstance(first["pid"], int)
    assert second["job_id"] == str(job_id) and "ValueError: boom" in second["exception"]
    assert "job_id" not in third and third["level"] == "WARNING"


async def test_text_lines_name_the_job_after_the_message(captured: logging.Logger) -> None:
    out = attach(captured, "text")

    async def job() -> None:
        logs.bind_job("j-1", "ds-2", "spending")
        captured.info("claimed")

    await asyncio.create_task(job())
    captured.info("idle")
    claimed, idle = out.getvalue().splitlines()
    assert claimed.endswith("claimed [job_id=j-1 dataset_id=ds-2 model_type=spending]")
    assert idle.endswith(f"{captured.name}: idle")


def test_configure_sets_the_level_and_the_format_of_the_root_logger() -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    try:
        logs.configure(log_format="json", level="WARNING")
        assert root.level == logging.WARNING
        [handler] = root.handlers
        assert isinstance(handler.formatter, logs.JsonFormatter)
        config = logs.dict_config("json", "DEBUG")
        assert config["root"]["level"] == "DEBUG" and config["formatters"]["fcl"]["()"] is logs.JsonFormatter
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])


def test_every_log_level_reads_as_one_faust_takes() -> None:
    from typing import get_args

    from faust.cli.base import LOGLEVELS

    from fcl.contract.logs import faust_level
    from fcl.contract.settings import Settings

    levels = get_args(Settings.model_fields["log_level"].annotation)
    assert set(levels) == {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    taken = {name.lower() for name in LOGLEVELS}
    assert {faust_level(level) for level in levels} <= taken

"""`fcl watch`: follow the training-status, training-validation and model-versions topics in the
terminal, with a progress bar per running job.

`JobBoard` is the pure part (what each event says, which jobs run and how far they are); `watch`
reads the topics with a plain consumer (no group: it never moves anyone's offsets) and draws the
board with rich."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fcl.contract.settings import Settings
from fcl.contract.topics import Topic

WATCHED = (Topic.TRAINING_STATUS, Topic.TRAINING_VALIDATION, Topic.MODEL_VERSIONS)
FINAL = ("completed", "failed", "cancelled")


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def describe(topic: str, event: dict[str, Any]) -> str:
    """One line for one event."""
    at = str(event.get("occurred_at", ""))[11:19]
    if topic == Topic.TRAINING_STATUS:
        job = str(event.get("job_id", ""))[:8]
        parts = [f"{at} job {job} {event.get('model_type')} {event.get('dataset_id')}: {event.get('status')}"]
        if event.get("status") == "in_progress" and event.get("progress") is not None:
            parts.append(f"{100 * float(event['progress']):.0f}%")
        if event.get("attempt", 1) > 1:
            parts.append(f"attempt {event['attempt']}")
        if event.get("model_version") is not None:
            parts.append(f"version {event['model_version']}")
        if event.get("error"):
            parts.append(f"error {event['error'].get('type')}: {event['error'].get('message')}")
        if event.get("message"):
            parts.append(f"({event['message']})")
        return " ".join(parts)
    if topic == Topic.TRAINING_VALIDATION:
        checks = event.get("checks") or []
        failed = [c["metric"] for c in checks if not c.get("passed")]
        against = (
            f"champion v{event['baseline_version']}"
            if event.get("baseline_version") is not None
            else "fixed bounds (first model)"
        )
        verdict = "PASSED" if event.get("passed") else f"FAILED ({', '.join(failed)})"
        promoted = "promoted" if event.get("promoted") else "not promoted"
        detail = "; ".join(
            f"{c['metric']} {_num(c.get('value'))} {'≥' if c.get('direction') == 'higher_is_better' else '≤'} "
            f"{_num(c.get('threshold'))} {'ok' if c.get('passed') else 'FAIL'}"
            for c in checks
        )
        return (
            f"{at} validation {event.get('model_type')} v{event.get('candidate_version')} vs {against}: "
            f"{verdict}, {promoted} [{detail}]"
        )
    if topic == Topic.MODEL_VERSIONS:
        return (
            f"{at} champion {event.get('model_type')}: v{event.get('previous_version') or '–'} → "
            f"v{event.get('version')} ({event.get('reason')})"
        )
    return f"{at} {topic}: {json.dumps(event)}"


@dataclass
class JobBoard:
    """Running jobs and their progress, from status events (repeats are dropped by event_id)."""

    running: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id -> last status event
    seen: set[str] = field(default_factory=set)

    def apply(self, topic: str, event: dict[str, Any]) -> bool:
        """Take one event; False when it is a repeat."""
        event_id = str(event.get("event_id"))
        if event_id in self.seen:
            return False
        self.seen.add(event_id)
        if topic == Topic.TRAINING_STATUS:
            job = str(event.get("job_id"))
            if event.get("status") == "in_progress":
                self.running[job] = event
            else:
                self.running.pop(job, None)
        return True


async def watch(
    settings: Settings,
    *,
    from_beginning: bool = False,
    max_events: int | None = None,
    job_id: str | None = None,
    out: Callable[[str], None] | None = None,
    keep: Callable[[str, dict[str, Any]], bool] | None = None,
) -> int:
    """Print events until interrupted (or `max_events`). Returns how many were printed. `out`
    replaces the terminal; `keep(topic, event)` can drop events."""
    from aiokafka import AIOKafkaConsumer
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    from fcl.messaging.security import client_options

    console = Console(highlight=False)
    topics = {settings.topic(t.value): t for t in WATCHED}
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        **client_options(settings),
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
    )
    board = JobBoard()
    printed = 0
    bars: dict[str, Any] = {}
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        console=console,
        transient=True,
        disable=out is not None or not console.is_terminal,
    )
    emit = out or (lambda line: console.print(line, markup=False, soft_wrap=True))
    await consumer.start()
    try:
        with progress:
            emit(f"watching {', '.join(topics)} on {settings.kafka_bootstrap} (Ctrl-C to stop)")
            while max_events is None or printed < max_events:
                batches = await consumer.getmany(timeout_ms=500)
                for record in (r for records in batches.values() for r in records):
                    if max_events is not None and printed >= max_events:
                        break
                    try:
                        event = json.loads(record.value)
                    except (ValueError, TypeError):
                        continue
                    if not isinstance(event, dict):
                        continue
                    if job_id is not None and event.get("job_id") != job_id:
                        continue
                    topic = topics[record.topic]
                    if keep is not None and not keep(topic, event):
                        continue
                    if not board.apply(topic, event):
                        continue
                    emit(describe(topic, event))
                    printed += 1
                    _draw(progress, bars, board)
    except asyncio.CancelledError:
        pass
    finally:
        await consumer.stop()
    return printed


def _draw(progress: Any, bars: dict[str, Any], board: JobBoard) -> None:
    for job, task in list(bars.items()):
        if job not in board.running:
            progress.remove_task(task)
            del bars[job]
    for job, event in board.running.items():
        description = f"{job[:8]} {event.get('model_type')} {event.get('dataset_id')}"
        done = 100 * float(event.get("progress") or 0.0)
        if job in bars:
            progress.update(bars[job], completed=done)
        else:
            bars[job] = progress.add_task(description, total=100, completed=done)

"""The serving library's two commands: `fcl serve MODEL_TYPE` (or `python -m fcl.serving`) runs one
champion watcher and prints a JSON line per swap; `fcl predict MODEL_TYPE` answers records on stdin
with the current champion."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any

from fcl.contract import logs
from fcl.serving.watcher import ChampionWatcher, Served, WatcherError

log = logging.getLogger("fcl.serving")


# -- python -m fcl.serving ----------------------------------------------------------------------------------
def _print_swap(served: Served) -> None:
    line = {
        "model_type": served.model_type,
        "version": served.version,
        "sha256": served.sha256,
        "model": type(served.model).__name__,
        "loaded_at": served.loaded_at.isoformat(),
        "event_id": served.cause.get("event_id") if served.cause else None,
        "event_occurred_at": served.cause.get("occurred_at") if served.cause else None,
    }
    print(json.dumps(line), flush=True)


async def _main(model_type: str, api_url: str | None) -> int:
    from fcl.contract.settings import load_settings

    settings = load_settings()
    watcher = ChampionWatcher.from_settings(model_type, settings, api_url=api_url, on_swap=_print_swap)
    await watcher.open()
    print(json.dumps({"watching": model_type, "topic": watcher.topic, "api": watcher.api_url}), flush=True)
    task = watcher.start()
    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signalled.set)
    waiting = asyncio.create_task(signalled.wait())
    await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    try:
        await watcher.stop()  # raises what ended the watcher's task, if anything did
    except Exception:
        log.exception("the champion watcher died")
        return 1
    # stopped by a signal (0); a watcher that ended by itself is a consumer that died (1)
    return 0 if signalled.is_set() else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fcl.serving", description="Keep a model type's champion loaded; print a JSON line per swap."
    )
    parser.add_argument("model_type")
    parser.add_argument("--api", help="the fcl web API's base URL (default from FCL_HTTP_HOST/FCL_HTTP_PORT)")
    args = parser.parse_args(argv)
    from fcl.contract.settings import load_settings

    settings = load_settings()
    logs.configure(log_format=settings.log_format, level=settings.log_level)
    return asyncio.run(_main(args.model_type, args.api))


# -- fcl predict ----------------------------------------------------------------------------------------
def predict_main(model_type: str, api_url: str | None, horizon: int | None, stdin: Any, stdout: Any) -> int:
    """Records on stdin (one JSON object a line, without their outcome fields), one prediction a
    line on stdout from the current champion (spending: one forecast a user). A line that is not
    a JSON object, or a record refused, is answered `{"line": n, "error": reason}` and the exit
    status is 1; 0 when every line was answered."""
    from fcl.contract.settings import load_settings
    from fcl.serving.predict import MAX_PREDICT_RECORDS, InvalidRecords, predictor

    settings = load_settings()
    logs.configure(log_format=settings.log_format, level=settings.log_level)
    try:
        watcher = ChampionWatcher.from_settings(model_type, settings, api_url=api_url)
        served = asyncio.run(watcher.load_champion())
    except ValueError as exc:  # an unknown model type
        print(f"fcl predict: {exc}", file=sys.stderr)
        return 2
    except WatcherError as exc:
        print(f"fcl predict: {exc}", file=sys.stderr)
        return 2
    model = predictor(model_type, served.model)
    options = {"horizon": horizon} if horizon is not None else {}
    failed = False
    records: list[tuple[int, Any]] = []

    def write(document: dict[str, Any]) -> None:
        stdout.write(json.dumps(document) + "\n")

    def answer(batch: list[tuple[int, Any]]) -> None:
        nonlocal failed
        try:
            for item in model.predict([r for _, r in batch], **options):
                write({"version": served.version, **item})
            return
        except InvalidRecords as exc:
            if model_type == "spending":  # one forecast needs a user's whole history: one refusal
                write({"error": str(exc)})
                failed = True
                return
        for n, record in batch:  # which lines were refused: one at a time
            try:
                [item] = model.predict([record], **options)
                write({"version": served.version, **item})
            except InvalidRecords as exc:
                write({"line": n, "error": str(exc)})
                failed = True

    for n, line in enumerate(stdin, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            write({"line": n, "error": "not JSON"})
            failed = True
            continue
        records.append((n, record))
        if len(records) >= (MAX_PREDICT_RECORDS if model_type == "spending" else 1000):
            if model_type == "spending":
                write({"line": n, "error": f"over MAX_PREDICT_RECORDS ({MAX_PREDICT_RECORDS}) records"})
                return 1
            answer(records)
            records = []
    if records:
        answer(records)
    stdout.flush()
    return 1 if failed else 0

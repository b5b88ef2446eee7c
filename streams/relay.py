"""The streams worker's outbox relay, in a process of its own: `python -m fcl.streams.relay`.

`fcl streams` starts it and watches it. It publishes what the agents' transactions wrote to the
outbox (the `queued` events of admitted jobs, the thresholds that sample batches crossed, dead
letters), so that the agents' process spends its one core (Python runs one thread at a time) on
reading and committing: in that process the relay took a sixth of the time at 4,800 admissions/s
(bench/bench_streams.py).

The two live and die together. The relay process stops, gracefully, when its standard input
closes: `fcl streams` holds the other end, so its stop closes it, and so does its death, however
it dies. It ignores SIGTERM and SIGINT, which reach it with its parent's process group and would
otherwise end it before its parent knows that it is stopping. A relay (or its producer or listener)
that dies exits with status 1, and `fcl streams` then exits with status 1 as well.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from fcl.contract import logs
from fcl.contract.backoff import wait_until
from fcl.contract.lifeline import exit_when_done
from fcl.contract.settings import Settings, get_settings
from fcl.messaging.producer import BackgroundProducer, is_record_error
from fcl.storage.db import Database
from fcl.storage.notifications import Notifications
from fcl.storage.outbox import OutboxRelay

MODULE = "fcl.streams.relay"
log = logging.getLogger("fcl.streams.relay")


async def serve(settings: Settings) -> int:
    db = Database(settings.database_url, pool_size=2, pre_ping=False)
    producer = BackgroundProducer(settings)
    notifications = Notifications(settings.database_url)
    relay = OutboxRelay.from_settings(
        settings, db, producer.send, notifications=notifications, is_record_error=is_record_error
    )
    parent_gone = asyncio.Event()
    loop = asyncio.get_running_loop()

    def read_stdin() -> None:
        try:
            data = os.read(sys.stdin.fileno(), 4096)
        except OSError:
            data = b""
        if not data:  # end of file: the parent closed its end, or died
            loop.remove_reader(sys.stdin.fileno())
            parent_gone.set()

    loop.add_reader(sys.stdin.fileno(), read_stdin)
    exit_when_done(producer.start(), "Kafka producer", parent_gone.is_set)
    notifications.start()
    if notifications.task is not None:
        exit_when_done(notifications.task, "notification listener", parent_gone.is_set)
    exit_when_done(relay.start(), "outbox relay", parent_gone.is_set)
    try:

        async def ready() -> bool:  # the producer reached the broker (or there is nothing to wait for)
            return producer.connected or parent_gone.is_set()

        await wait_until(ready, timeout=float("inf"), interval=0.05)
        log.info("outbox relay: ready (pid %d)", os.getpid())
        await parent_gone.wait()
    finally:
        await relay.stop()
        await notifications.stop()
        await producer.stop()
        await db.close()
    return 0


def main() -> int:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    settings = get_settings()
    logs.configure(log_format=settings.log_format, level=settings.log_level)
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())

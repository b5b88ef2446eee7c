"""The `fcl` command line. Each subcommand has `--help`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fcl.contract import model_types
from fcl.stack.common import StackError

# The extra that brings each module a command may need (pyproject.toml): an install without it
# gets one line saying what to install, not a traceback.
EXTRA_OF = {
    **dict.fromkeys(("numpy", "scipy", "sklearn", "skops", "safetensors"), "serving"),
    "torch": "torch",
    **dict.fromkeys(
        ("faust", "mode", "sqlalchemy", "asyncpg", "alembic", "obstore", "prometheus_client", "opentelemetry"),
        "service",
    ),
}


def _storage_error() -> type[Exception]:
    """The database's error tree, when this install has the database code (the service extra)."""
    try:
        from fcl.storage.errors import StorageError
    except ModuleNotFoundError:

        class NoStorage(Exception):
            pass

        return NoStorage
    return StorageError


def _stack(args: argparse.Namespace) -> int:
    from fcl.stack import LocalStack

    stack = LocalStack(
        Path(args.state_dir),
        secure=True if getattr(args, "secure", False) else None,
        kafka_brokers=getattr(args, "kafka_brokers", None),
    )
    if args.action == "fetch":
        from fcl.stack.kafka import ensure_jars

        print(ensure_jars())
        return 0
    status = {"up": stack.up, "down": stack.down, "status": stack.status}[args.action]()
    if args.json:
        print(json.dumps(status.as_dict(), indent=2))
    else:
        for component in status.components():
            print(component.line())
        if status.up:
            print(f"settings for fcl commands: {status.env_file}")
    if args.action == "up" and not status.up:
        return 1
    if args.action == "status" and not status.up:
        return 3  # like `systemctl status`: not running is not an error, but scripts can tell
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from fcl.contract.settings import load_settings
    from fcl.storage.migrate import downgrade, upgrade

    url = args.database_url or load_settings().database_url
    if args.downgrade:
        downgrade(url, args.downgrade)
        print(f"database downgraded to {args.downgrade}")
    else:
        upgrade(url, args.revision)
        print(f"database at {args.revision}")
    return 0


def _schema_at_head() -> bool:
    """Every service checks the schema before it starts: on a database that is not at head it
    says so in one line and exits (2), instead of warning forever or dead-lettering valid events.
    While the database cannot be reached it waits and retries."""
    import asyncio
    import logging

    from fcl.contract.backoff import retrying_blocking
    from fcl.contract.settings import load_settings
    from fcl.storage.errors import StorageError
    from fcl.storage.migrate import schema_problem

    url = load_settings().database_url
    try:
        problem = retrying_blocking(
            what="fcl: database not reachable",
            log=logging.getLogger("fcl"),
            retry_on=lambda exc: isinstance(exc, StorageError) and exc.retriable,
            initial=0.5,
        )(lambda: asyncio.run(schema_problem(url)))
    except StorageError as exc:
        print(f"fcl: {exc}", file=sys.stderr)
        return False
    if problem is not None:
        print(f"fcl: {problem}", file=sys.stderr)
        return False
    return True


def _streams(args: argparse.Namespace) -> int:
    if not _schema_at_head():
        return 2
    from fcl.streams.app import main as streams_main

    streams_main(args.faust_args)
    return 0


def _trainer(args: argparse.Namespace) -> int:
    if not _schema_at_head():
        return 2
    from fcl.worker.main import main as trainer_main

    return trainer_main()


def _web(args: argparse.Namespace) -> int:
    if not _schema_at_head():
        return 2
    from fcl.web.app import main as web_main

    web_main(host=args.host, port=args.port)
    return 0


def _watch(args: argparse.Namespace) -> int:
    import asyncio

    from fcl.contract.settings import load_settings
    from fcl.watch import watch

    try:
        asyncio.run(
            watch(load_settings(), from_beginning=args.from_beginning, max_events=args.max_events, job_id=args.job_id)
        )
    except KeyboardInterrupt:
        pass
    return 0


def _predict(args: argparse.Namespace) -> int:
    from fcl.serving.cli import predict_main

    return predict_main(args.model_type, args.api, args.horizon, sys.stdin, sys.stdout)


def _serve(args: argparse.Namespace) -> int:
    from fcl.serving.cli import main as serve_main

    return serve_main([args.model_type, *(["--api", args.api] if args.api else [])])


def _demo(args: argparse.Namespace) -> int:
    from fcl.demo import main as demo_main

    return demo_main(exit_when_done=args.exit_when_done)


def _produce(args: argparse.Namespace) -> int:
    import asyncio

    from fcl.contract.settings import load_settings
    from fcl.messaging.client import FclProducer

    async def send() -> dict[str, object]:
        async with FclProducer(load_settings()) as producer:
            return await producer.send_threshold(
                args.dataset_id,
                args.model_type,
                priority=args.priority,
                sample_count=args.sample_count,
                threshold=args.threshold,
                event_id=args.event_id,
            )

    try:
        event = asyncio.run(send())
    except ValueError as exc:
        print(f"fcl: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(event))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import asyncio
    import itertools

    from fcl.trainers.simulator import simulate

    samples = simulate(args.model_type, seed=args.seed, users=args.users, days=args.days, episodes=args.episodes)
    if args.out:
        count = 0
        with sys.stdout if args.out == "-" else open(args.out, "w") as out:
            for sample in samples:
                out.write(json.dumps(sample, separators=(",", ":")) + "\n")
                count += 1
        print(f"wrote {count} {args.model_type} samples to {args.out}", file=sys.stderr)
        return 0

    from fcl.contract.settings import load_settings
    from fcl.messaging.client import FclProducer

    dataset_id = args.dataset_id or f"fincoach-{args.model_type}"

    async def send() -> tuple[int, int]:
        events = count = 0
        async with FclProducer(load_settings(), linger_ms=5) as producer:
            iterator = iter(samples)
            while batch := list(itertools.islice(iterator, args.batch)):
                await producer.send_samples(dataset_id, args.model_type, batch, wait=False)
                events, count = events + 1, count + len(batch)
        return events, count

    events, count = asyncio.run(send())
    print(f"sent {count} {args.model_type} samples in {events} events to dataset {dataset_id}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fcl", description="FinCoach continuous learning service")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stack = sub.add_parser(
        "stack",
        help="a local Apache Kafka broker (or cluster), PostgreSQL server and SeaweedFS object store (no Docker)",
        description="Start, stop or inspect the local broker, database server and object store. "
        "`up` writes their addresses to .fcl/stack.env.",
    )
    stack.add_argument(
        "action",
        choices=["up", "down", "status", "fetch"],
        help="up: start all three and wait until each answers; down: stop what up started; "
        "status: what runs, where, which versions; fetch: only cache the Kafka jars",
    )
    stack.add_argument("--state-dir", default=".fcl", help="where the stack keeps data, logs and pids")
    stack.add_argument("--json", action="store_true", help="print the status as JSON")
    stack.add_argument(
        "--secure",
        action="store_true",
        help="up: Kafka on SASL_SSL (SCRAM-SHA-512) and PostgreSQL on TLS with a password, under a CA the "
        "stack makes; stack.env carries the client settings (until `down`)",
    )
    stack.add_argument(
        "--kafka-brokers",
        type=int,
        metavar="N",
        help="up: a KRaft cluster of N nodes (each broker and controller; default 1). With 3 or more, "
        "stack.env asks for topics with 3 replicas and 2 in sync. The stack keeps N, its data is formatted for it",
    )
    stack.set_defaults(func=_stack)

    migrate = sub.add_parser(
        "migrate",
        help="apply the database migrations",
        description="Bring the database schema to a revision (default: head).",
    )
    migrate.add_argument("--revision", default="head", help="target revision (default head)")
    migrate.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION (e.g. base)")
    migrate.add_argument("--database-url", help="override FCL_DATABASE_URL")
    migrate.set_defaults(func=_migrate)

    streams = sub.add_parser(
        "streams",
        help="run the Faust streams worker (samples and threshold agents, outbox relay)",
        description="Run a Faust worker: the same as `faust -A streams.app worker`. "
        "Several workers share the partitions of one consumer group.",
    )
    streams.add_argument("faust_args", nargs=argparse.REMAINDER, help="extra arguments for `faust worker`")
    streams.set_defaults(func=_streams)

    trainer = sub.add_parser(
        "trainer",
        help="run a trainer worker (claims jobs, trains, validates, versions)",
        description="Run a trainer worker. Several share one PostgreSQL queue. Settings: "
        "FCL_TRAINER_CONCURRENCY, FCL_TRAINER_CAPS, FCL_LEASE_SECONDS, "
        "FCL_HEARTBEAT_SECONDS, FCL_DRAIN_SECONDS, FCL_TRAINER_TIMEOUTS, "
        "FCL_MAX_ATTEMPTS, FCL_RETRY_BASE_SECONDS, FCL_TRAINER_HYPERPARAMETERS.",
    )
    trainer.set_defaults(func=_trainer)

    web_cmd = sub.add_parser(
        "web",
        help="serve the HTTP API and the dashboard",
        description="Serve the HTTP API (under /coaching/continuous-learning), /healthz, "
        "/metrics, /openapi.json and the dashboard at /. Settings: FCL_HTTP_HOST, "
        "FCL_HTTP_PORT, FCL_API_TOKEN (unset: every POST is refused), "
        "FCL_HTTP_MAX_BODY_BYTES.",
    )
    web_cmd.add_argument("--host", help="bind address (default FCL_HTTP_HOST, 127.0.0.1)")
    web_cmd.add_argument("--port", type=int, help="port (default FCL_HTTP_PORT, 8000)")
    web_cmd.set_defaults(func=_web)

    watch = sub.add_parser(
        "watch",
        help="follow status, validation and champion events in the terminal",
        description="Print each training-status, training-validation and model-versions event "
        "as one line, with a progress bar per running job (on a terminal). "
        "Reads without a consumer group, so it moves no one's offsets.",
    )
    watch.add_argument("--from-beginning", action="store_true", help="start at the oldest events, not the newest")
    watch.add_argument("--job-id", help="only this job's events")
    watch.add_argument("--max-events", type=int, help="exit after printing this many events")
    watch.set_defaults(func=_watch)

    serve = sub.add_parser(
        "serve",
        help="keep a model type's champion loaded (the serving library); a JSON line per swap",
        description="Run the serving library's ChampionWatcher: follow model-versions, download each new "
        "champion's artifact from the API with FCL_API_TOKEN, check its sha256, load it, swap it in, and "
        "print a JSON line per swap (the same as python -m fcl.serving MODEL_TYPE).",
    )
    serve.add_argument("model_type", help=f"one of: {model_types.known()}")
    serve.add_argument("--api", help="the fcl web API's base URL (default from FCL_HTTP_HOST/FCL_HTTP_PORT)")
    serve.set_defaults(func=_serve)

    predict = sub.add_parser(
        "predict",
        help="predict with the current champion: records on stdin, predictions on stdout",
        description="Read records without their outcome fields (one JSON object a line) on stdin and print one "
        "JSON prediction a line from the current champion (goal: probability; segmentation: segment and "
        "distance; spending: a forecast a user; recommendation: action). Uses FCL_SERVE_TOKEN, else "
        "FCL_API_TOKEN. A refused line is answered with its reason, and the exit status is 1.",
    )
    predict.add_argument("model_type", help=f"one of: {model_types.known()}")
    predict.add_argument("--api", help="the fcl web API's base URL (default from FCL_HTTP_HOST/FCL_HTTP_PORT)")
    predict.add_argument("--horizon", type=int, help="spending: days to forecast (default 7)")
    predict.set_defaults(func=_predict)

    demo = sub.add_parser(
        "demo",
        help="all of it at once: stack, streams, trainer, web and simulated traffic",
        description="Start the local stack (when not up), migrate, start fcl streams, trainer and "
        "web with demo-sized thresholds, print the dashboard URL and API token, feed "
        "simulated FinCoach samples, and show all four model types trained, validated "
        "and versioned and a retrain judged against its champion. Ctrl-C stops "
        "everything it started.",
    )
    demo.add_argument(
        "--exit-when-done",
        action="store_true",
        help="stop everything once the demo has shown its results instead of serving until Ctrl-C",
    )
    demo.set_defaults(func=_demo)

    produce = sub.add_parser("produce", help="send a one-off event", description="Send one event to Kafka.")
    produce_sub = produce.add_subparsers(dest="event", required=True, metavar="EVENT")
    threshold = produce_sub.add_parser(
        "threshold",
        help="a dataset-threshold event",
        description="Send a dataset-threshold event (asks for a training job).",
    )
    threshold.add_argument("--dataset-id", required=True)
    threshold.add_argument("--model-type", required=True, help=f"one of: {model_types.known()}")
    threshold.add_argument("--priority", type=int, default=5, choices=range(10), metavar="0-9")
    threshold.add_argument("--sample-count", type=int)
    threshold.add_argument("--threshold", type=int)
    threshold.add_argument("--event-id", help="idempotency key (default: a new UUID)")
    threshold.set_defaults(func=_produce)

    simulate = sub.add_parser(
        "simulate",
        help="synthetic FinCoach samples to Kafka or a file",
        description="Generate FinCoach users (deterministic by seed) and send their samples "
        "of one model type to training-samples, or write them as JSON lines.",
    )
    simulate.add_argument("--model-type", required=True, choices=model_types.names())
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--users", type=int, default=1000, help="simulated users (default 1000)")
    simulate.add_argument("--days", type=int, default=365, help="spending: days of history (default 365)")
    simulate.add_argument("--episodes", type=int, default=2000, help="recommendation: logged episodes (default 2000)")
    simulate.add_argument("--dataset-id", help="dataset to send to (default fincoach-<model type>)")
    simulate.add_argument(
        "--batch",
        type=int,
        default=500,
        choices=range(1, 1001),
        metavar="1-1000",
        help="samples per event (default 500)",
    )
    simulate.add_argument("--out", help="write JSON lines to this file (- for stdout) instead of sending to Kafka")
    simulate.set_defaults(func=_simulate)

    from fcl.operator import add_parsers

    add_parsers(sub, model_types.names())
    return parser


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from fcl.contract.settings import refusal
    from fcl.messaging.security import KafkaRefused
    from fcl.operator import OperatorError

    args = build_parser().parse_args(argv)
    storage_error = _storage_error()
    try:
        return int(args.func(args))
    except (StackError, storage_error, OperatorError, KafkaRefused) as exc:
        print(f"fcl: error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in EXTRA_OF:
            raise
        extra = EXTRA_OF[top]
        print(
            f"fcl: error: `fcl {args.command}` needs {top}, which comes with fcl's {extra!r} extra: "
            f"pip install 'fcl[{extra}]' (or 'fcl[all]')",
            file=sys.stderr,
        )
        return 2
    except (ValidationError, SettingsError) as exc:  # a setting (FCL_* or .fcl/stack.env) it cannot run with
        print(f"fcl: error: invalid settings: {refusal(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

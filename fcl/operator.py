"""`fcl jobs`, `fcl versions`, `fcl history`: the operator's commands, over the HTTP API (the same
calls a dashboard or a script makes; nothing here touches the database). Each prints a table, or
the API's JSON with `--json`. The API's URL comes from `--api` or FCL_HTTP_HOST/FCL_HTTP_PORT; the
token from FCL_API_TOKEN; each champion move names its maker (`X-FCL-Actor`: user@host)."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from typing import Any

from fcl.contract.backoff import retrying_blocking

API = "/coaching/continuous-learning"
log = logging.getLogger("fcl.operator")


def _worth_another_try(exc: BaseException) -> bool:
    """A gateway's 502/503/504, a timeout or a dropped connection: the request may not have been
    carried out, and its Idempotency-Key makes another try safe."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in (502, 503, 504)
    return isinstance(exc, (urllib.error.URLError, TimeoutError, OSError))


class OperatorError(Exception):
    """The API refused the call or could not be reached; printed as one line."""


class Client:
    def __init__(self, base_url: str, token: str | None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Client:
        from fcl.contract.settings import load_settings

        settings = load_settings()
        return cls(args.api or f"http://{settings.http_host}:{settings.http_port}", settings.api_token)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, *, tries: int = 3, **query: Any) -> Any:
        """One request; a POST carries one Idempotency-Key for all its tries, so a try whose
        answer was lost (a timeout, a dropped connection, a 502/503/504 on the way) is sent again
        and answered with the first result, never carried out twice."""
        params = {k: v for k, v in query.items() if v is not None}
        url = self.base_url + API + path + (("?" + urllib.parse.urlencode(params)) if params else "")
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if method in ("POST", "PUT", "DELETE"):
            headers["X-FCL-Actor"] = f"{_user()}@{socket.gethostname()} (fcl cli)"
        if method == "POST":
            headers["Idempotency-Key"] = str(uuid.uuid4())  # one per command, kept across its tries
        if method in ("POST", "PUT"):  # PUT and DELETE are idempotent by themselves
            headers["Content-Type"] = "application/json"
            data = json.dumps(body or {}).encode()
        request = urllib.request.Request(url, data=data, headers=headers, method=method)

        def once() -> Any:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")

        try:
            return retrying_blocking(
                what=f"{method} {path}", log=log, retry_on=_worth_another_try, initial=0.5, maximum=4.0, tries=tries
            )(once)
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read())["error"]
                raise OperatorError(f"{exc.code} {error['code']}: {error['message']}") from None
            except (ValueError, KeyError, TypeError):
                raise OperatorError(f"{method} {url} answered {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OperatorError(
                f"the API at {self.base_url} cannot be reached ({reason}); is `fcl web` running?"
            ) from None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# -- output -------------------------------------------------------------------------------------------
def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("\n", " ")[:80]


def _when(stamp: str | None) -> str:
    return stamp[:19].replace("T", " ") if stamp else "-"


def _out(args: argparse.Namespace, data: Any, human: str) -> int:
    print(json.dumps(data, indent=2) if args.json else human)
    return 0


# -- fcl jobs ---------------------------------------------------------------------------------------
def _job_rows(jobs: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            j["job_id"],
            j["model_type"],
            j["dataset_id"],
            j["status"],
            j["priority"],
            f"{j['attempts']}/{j['max_attempts']}",
            j.get("progress"),
            j.get("worker"),
            j.get("model_version"),
        ]
        for j in jobs
    ]


JOB_HEADERS = ["job", "model type", "dataset", "status", "priority", "attempts", "progress", "worker", "version"]


def jobs(args: argparse.Namespace) -> int:
    client = Client.from_args(args)
    if args.action == "list":
        status = client.call("GET", "/training-status")
        listed = status["running"] + status["waiting"]
        counts = ", ".join(f"{k} {v}" for k, v in sorted(status["queue"].items()))
        human = f"queue: {counts or 'empty'}\n" + table(JOB_HEADERS, _job_rows(listed))
        return _out(args, {"queue": status["queue"], "jobs": listed}, human)
    if args.action == "show":
        job = client.call("GET", f"/training-job/{_uuid(args.job_id)}")
        lines = [f"{k}: {_cell(v)}" for k, v in job.items() if k not in ("timeline", "attempts_detail")]
        return _out(args, job, "\n".join(lines))
    job = client.call("POST", f"/training-job/{_uuid(args.job_id)}/{args.action}")
    return _out(args, job, table(JOB_HEADERS, _job_rows([job])))


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise OperatorError(f"{value!r} is not a job id (a UUID)") from None


# -- fcl versions -----------------------------------------------------------------------------------
def drift_summary(drift: dict[str, Any] | None) -> str:
    """One line: how far the candidate's data moved from the champion's."""
    if not drift:
        return "drift: not measured (no champion data profile)"
    top = sorted(drift["psi"].items(), key=lambda kv: -kv[1])[:3]
    outcome = drift.get("outcome")
    shift = f"; {outcome['name']} {outcome['champion']:.4f} -> {outcome['candidate']:.4f}" if outcome else ""
    return (
        f"drift from v{drift['reference_version']}'s data: {drift['level']} (largest PSI {drift['psi_max']:.3f}: "
        + ", ".join(f"{k} {p:.3f}" for k, p in top)
        + f"){shift}"
    )


VERSION_HEADERS = ["model type", "version", "champion", "verdict", "key metrics", "dataset", "created", "artifact"]
LEDGER_HEADERS = ["when", "model type", "move", "reason", "by", "note"]


def _key_metrics(metrics: dict[str, Any]) -> str:
    keys = ("roc_auc", "silhouette", "mae", "fqe_value", "policy_value")
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys if isinstance(metrics.get(k), (int, float)))


def _ledger_rows(ledger: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            _when(m["occurred_at"]),
            m["model_type"],
            f"v{m['previous_version']} -> v{m['version']}" if m["previous_version"] else f"-> v{m['version']}",
            m["reason"],
            m.get("actor"),
            m.get("note"),
        ]
        for m in ledger
    ]


def shadow_text(view: dict[str, Any]) -> str:
    """The shadow comparison in words: champion and challenger side by side on the same outcomes."""
    model_type = view["model_type"]
    if view.get("challenger") is None:
        return f"{model_type}: no shadow challenger (set one with: fcl versions shadow {model_type} VERSION)"
    head = f"{model_type}: challenger v{view['challenger']} scored in the shadow"
    if view.get("set_by"):
        head += f" (set by {view['set_by']}, {_when(view['set_at'])})"
    champion, challenger = view.get("champion"), view.get("shadow")
    if view.get("computed_at") is None or champion is None or challenger is None:
        return head + f"\n{view['window']}: not compared yet (a trainer worker compares every FCL_LIVE_EVAL_SECONDS)"
    lines = [
        head,
        f"over the last {view['window']}: {view['predictions']} served predictions scored by both, "
        f"{view['with_outcome']} with an outcome (compared {_when(view['computed_at'])})",
    ]
    names = sorted(set(champion["metrics"]) | set(challenger["metrics"]))
    rows: list[list[Any]] = [
        [n, _figure(champion["metrics"].get(n)), _figure(challenger["metrics"].get(n))]
        for n in names
        if not isinstance(champion["metrics"].get(n), (dict, list))
    ]
    psi = [(side.get("input_drift") or {}).get("psi_max") for side in (champion, challenger)]
    rows.append(["input PSI max", _figure(psi[0]), _figure(psi[1])])
    lines.append(table(["figure", f"champion v{champion['version']}", f"challenger v{challenger['version']}"], rows))
    comparison = view.get("comparison")
    if comparison and comparison.get("better"):
        gain = comparison.get("gain")
        said = f"{comparison['metric']}: the {comparison['better']} did better" + (
            f" ({gain:+.1%} for the challenger)" if isinstance(gain, (int, float)) else ""
        )
        lines.append(said)
        if comparison["better"] == "challenger":
            lines.append(
                f"promote it with: fcl versions promote {model_type} {challenger['version']} "
                f'--reason "better in the shadow" --expected-version {champion["version"]}'
            )
    return "\n".join(lines)


def _figure(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def versions(args: argparse.Namespace) -> int:
    client = Client.from_args(args)
    if args.action == "shadow":
        path = f"/model-versions/{args.model_type}/shadow"
        if args.clear:
            cleared = client.call("DELETE", path)
            was = cleared.get("cleared")
            return _out(
                args,
                cleared,
                f"{args.model_type}: "
                + (f"v{was} no longer scored in the shadow" if was else "no challenger to clear"),
            )
        if args.version is not None:
            client.call("PUT", path, body={"version": args.version})
        view = client.call("GET", path, window=args.window)
        return _out(args, view, shadow_text(view))
    if args.action == "promote":
        move = client.call(
            "POST",
            f"/model-versions/{args.model_type}/{args.version}/promote",
            body={"reason": args.reason, "expected_version": args.expected_version},
        )
        return _out(args, move, table(LEDGER_HEADERS, _ledger_rows([move])))
    if args.action == "rollback":
        move = client.call(
            "POST", f"/model-versions/{args.model_type}/rollback", body={"expected_version": args.expected_version}
        )
        return _out(args, move, table(LEDGER_HEADERS, _ledger_rows([move])))
    listing = client.call(
        "GET",
        "/model-versions",
        model_type=args.model_type,
        version=getattr(args, "version", None) if args.action == "show" else None,
        limit=500,
    )
    if args.action == "show":
        found = [v for v in listing["versions"] if v["version"] == args.version]
        if not found:
            raise OperatorError(f"{args.model_type} has no version {args.version}")
        version = found[0]
        validation = client.call("GET", f"/validation-results/{version['training_event_id']}")
        moves = [m for m in listing["ledger"] if args.version in (m["version"], m["previous_version"])]
        data = {"version": version, "validation": validation, "ledger": moves}
        checks = table(
            ["metric", "kind", "value", "baseline", "threshold", "passed"],
            [
                [c["metric"], c["kind"], c["value"], c["baseline"], c["threshold"], c["passed"]]
                for c in validation["checks"]
            ],
        )
        human = "\n".join(
            [
                f"{args.model_type} v{args.version}{'  (champion)' if version['is_champion'] else ''}"
                + (f"  removed by the retention {_when(version['deleted_at'])}" if version.get("deleted_at") else ""),
                f"verdict: {validation.get('verdict')}  promoted when validated: {validation['promoted']}"
                + (f"  ({validation['message']})" if validation.get("message") else ""),
                f"judged against: v{version['parent_version']}" if version["parent_version"] else "judged against: -",
                drift_summary(validation.get("drift")),
                f"artifact: {version['artifact']['path']}  sha256 {version['artifact']['sha256']}  "
                f"{version['artifact']['size']} bytes",
                f"dataset: {version['dataset_id']} (hash {version['dataset_hash'][:12]})  seed {version['seed']}",
                "",
                checks,
                "",
                "champion moves of this version:",
                table(LEDGER_HEADERS, _ledger_rows(moves)),
            ]
        )
        return _out(args, data, human)
    verdicts = _verdicts(client, listing["versions"]) if not args.json else {}
    rows = [
        [
            v["model_type"],
            v["version"],
            "yes" if v["is_champion"] else ("removed" if v.get("deleted_at") else ""),
            verdicts.get((v["model_type"], v["version"])),
            _key_metrics(v["metrics"]),
            v["dataset_id"],
            _when(v["created_at"]),
            v["artifact"]["sha256"][:12],
        ]
        for v in listing["versions"]
    ]
    human = "\n".join(
        [
            table(VERSION_HEADERS, rows),
            "",
            "champion ledger (newest first):",
            table(LEDGER_HEADERS, _ledger_rows(listing["ledger"])),
        ]
    )
    return _out(args, listing, human)


def _verdicts(client: Client, listed: list[dict[str, Any]]) -> dict[tuple[str, int], str]:
    """Each version's verdict, from the history (one page of the newest trainings)."""
    page = client.call("GET", "/training-history", limit=100)
    return {
        (e["model_type"], e["model_version"]): e.get("verdict") or ""
        for e in page["items"]
        if e.get("model_version") is not None
    }


# -- fcl history ------------------------------------------------------------------------------------
def reason_text(reason: Any) -> str:
    """Why a job was queued, in a few words: `live_drop day: roc_auc 0.62 vs 0.81 (-23%)`."""
    if not isinstance(reason, dict):
        return ""
    kind = str(reason.get("kind", ""))
    window = f" {reason['window']}" if reason.get("window") not in (None, "-") else ""

    def num(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, (int, float)) else "?"

    if kind == "live_drop":
        return f"live_drop{window}: {reason.get('metric')} {num(reason.get('live'))} vs {num(reason.get('validated'))}"
    if kind == "input_drift":
        return f"input_drift{window}: PSI {num(reason.get('psi_max'))} ({reason.get('feature')})"
    if kind == "champion_age":
        return f"champion_age: {num(reason.get('age_seconds'))} s > {num(reason.get('limit'))} s"
    return kind


def history(args: argparse.Namespace) -> int:
    client = Client.from_args(args)
    page = client.call(
        "GET", "/training-history", limit=args.limit, model_type=args.model_type, status=args.status, before=args.before
    )
    listing = client.call("GET", "/model-versions", model_type=args.model_type)
    champions = listing["champions"]
    rows = []
    for e in page["items"]:
        if e.get("promoted"):
            now = champions.get(e["model_type"])
            outcome = "promoted, serving" if now == e["model_version"] else f"promoted, since replaced (now v{now})"
        elif e.get("verdict"):
            outcome = f"not promoted: {e['verdict']}"
        else:
            outcome = (e.get("error") or {}).get("type") or ""
        rows.append(
            [
                _when(e["started_at"]),
                e["model_type"],
                e["dataset_id"],
                e["attempt"],
                e["status"],
                e.get("model_version"),
                outcome,
                e.get("duration_seconds"),
                e.get("worker"),
                reason_text(e.get("reason")),
            ]
        )
    headers = [
        "started",
        "model type",
        "dataset",
        "attempt",
        "status",
        "version",
        "outcome",
        "seconds",
        "worker",
        "reason",
    ]
    human = table(headers, rows)
    if page.get("next_before"):
        human += f"\nolder: --before {page['next_before']}"
    return _out(args, page, human)


def datasets(args: argparse.Namespace) -> int:
    client = Client.from_args(args)
    path = f"/datasets/{urllib.parse.quote(args.dataset_id, safe='')}"
    found = client.call("POST", path + "/reset-shape") if args.action == "reset-shape" else client.call("GET", path)
    human = "\n".join(
        [
            f"dataset {found['dataset_id']} ({found['model_type']}): {found['samples_since_training']} of "
            f"{found['threshold']} samples since the last training, {found['total_samples']} in all",
            f"shape version {found['shape_version']} (trainings read the samples after id {found['shape_from_id']}): "
            + (
                json.dumps(found["sample_shape"]) if found["sample_shape"] is not None else "none yet: the next event's"
            ),
            f"last trained {_when(found['last_trained_at'])}",
        ]
    )
    return _out(args, found, human)


def dead_letters(args: argparse.Namespace) -> int:
    client = Client.from_args(args)
    if args.action == "show":
        letter = client.call("GET", f"/dead-letters/{args.id}")
        human = "\n".join(
            [
                f"dead letter {letter['id']}: {letter['source_topic']} partition {letter['partition']} "
                f"offset {letter['offset']}, key {letter['key']!r}",
                f"kept {_when(letter['created_at'])}; replayed {letter['replays']} time(s)",
                f"reason: {letter['reason']}",
                f"value ({letter['value_bytes']} bytes, {letter['kept_bytes']} kept, {letter['value_encoding']}):",
                letter["value"] if letter["value"] is not None else "-",
            ]
        )
        return _out(args, letter, human)
    if args.action == "replay":
        if not (args.ids or args.reason or args.since):
            raise OperatorError("say which letters to replay: ID ..., --reason or --since")
        body = {"ids": args.ids or None, "reason": args.reason, "since": args.since, "limit": args.limit}
        done = client.call("POST", "/dead-letters/replay", body=body)
        return _out(args, done, f"{done['replayed']} input(s) sent back to their topic: {done['ids']}")
    page = client.call("GET", "/dead-letters", limit=args.limit, after=args.after, reason=args.reason, since=args.since)
    rows = [
        [d["id"], d["source_topic"], d["key"], d["value_bytes"], _when(d["created_at"]), d["replays"], d["reason"]]
        for d in page["items"]
    ]
    human = table(["id", "topic", "key", "bytes", "kept", "replays", "reason"], rows)
    if page.get("next_after"):
        human += f"\nmore: --after {page['next_after']}"
    return _out(args, page, human)


def outbox(args: argparse.Namespace) -> int:
    client = Client.from_args(args)
    if args.action == "unpark":
        if not args.ids and not args.all:
            raise OperatorError("name the parked rows to put back (ID ...) or say --all")
        done = client.call("POST", "/outbox/unpark", body={"ids": None if args.all else args.ids})
        return _out(args, done, f"{done['unparked']} parked event(s) back in line")
    page = client.call("GET", "/outbox", limit=args.limit, after=args.after)
    rows = [
        [p["id"], p["topic"], p["key"], p["attempts"], _when(p["parked_at"]), p["last_error"]] for p in page["parked"]
    ]
    human = f"pending: {page['pending']}   parked (this page): {len(rows)}\n"
    human += table(["id", "topic", "key", "tries", "parked", "last error"], rows)
    if page.get("next_after"):
        human += f"\nmore: --after {page['next_after']}"
    return _out(args, page, human)


# -- the parsers ------------------------------------------------------------------------------------
def add_parsers(sub: Any, model_type_names: Sequence[str]) -> None:
    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--api", help="the API's base URL (default http://FCL_HTTP_HOST:FCL_HTTP_PORT)")
        parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")

    jobs_parser = sub.add_parser(
        "jobs",
        help="list, show, cancel or retry training jobs (over the HTTP API)",
        description="Training jobs, through the HTTP API. list: running and waiting jobs with the "
        "queue's counts; show JOB_ID: one job with its timeline; cancel JOB_ID / retry JOB_ID "
        "(need FCL_API_TOKEN).",
    )
    jobs_sub = jobs_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    common(jobs_sub.add_parser("list", help="running and waiting jobs"))
    for action in ("show", "cancel", "retry"):
        p = jobs_sub.add_parser(action, help=f"{action} one job")
        p.add_argument("job_id")
        common(p)
    jobs_parser.set_defaults(func=jobs)

    datasets_parser = sub.add_parser(
        "datasets",
        help="a dataset's counter and sample shape; reset its shape (over the HTTP API)",
        description="show DATASET_ID: its counter, threshold and sample shape with its version; "
        "reset-shape DATASET_ID: forget the shape, so that the next event's shape starts the next "
        "version (then replay what was refused: `fcl dead-letters replay --reason shape`). "
        "reset-shape needs FCL_API_TOKEN.",
    )
    datasets_sub = datasets_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action in ("show", "reset-shape"):
        p = datasets_sub.add_parser(action, help=f"{action} a dataset")
        p.add_argument("dataset_id")
        common(p)
    datasets_parser.set_defaults(func=datasets)

    letters_parser = sub.add_parser(
        "dead-letters",
        help="refused inputs, kept whole; replay them once the cause is fixed (over the HTTP API)",
        description="Every refused input is kept whole (up to FCL_MAX_EVENT_BYTES) for "
        "FCL_DEAD_LETTER_RETENTION_DAYS. list [--reason R] [--since T]: a page of them; show ID: one "
        "with its value; replay ID ... | --reason R | --since T: send them back to the topic they came "
        "from, as they arrived (the same idempotency). All need FCL_API_TOKEN.",
    )
    letters_sub = letters_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action in ("list", "replay"):
        p = letters_sub.add_parser(action, help=f"{action} kept inputs")
        if action == "replay":
            p.add_argument("ids", nargs="*", type=int, metavar="ID")
        p.add_argument("--reason", help="only those whose reason contains this text")
        p.add_argument("--since", help="only those kept since this time (RFC 3339)")
        p.add_argument("--limit", type=int, default=50 if action == "list" else 100)
        if action == "list":
            p.add_argument("--after", help="the cursor the previous page printed")
        common(p)
    show_letter = letters_sub.add_parser("show", help="one kept input with its value")
    show_letter.add_argument("id", type=int)
    common(show_letter)
    letters_parser.set_defaults(func=dead_letters)

    outbox_parser = sub.add_parser(
        "outbox",
        help="events waiting to be published, and the parked ones (over the HTTP API)",
        description="The outbox through the HTTP API. list: how many events wait and a page of "
        "the parked ones with their errors; unpark ID ... | --all: put parked events back in line "
        "once their cause is put right (needs FCL_API_TOKEN).",
    )
    outbox_sub = outbox_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = outbox_sub.add_parser("list", help="pending count and parked events")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--after", help="the cursor the previous page printed")
    common(listing)
    unparking = outbox_sub.add_parser("unpark", help="put parked events back in line")
    unparking.add_argument("ids", nargs="*", type=int, metavar="ID")
    unparking.add_argument("--all", action="store_true", help="every parked event")
    common(unparking)
    outbox_parser.set_defaults(func=outbox)

    versions_parser = sub.add_parser(
        "versions",
        help="model versions and the champion ledger; promote and rollback (over the HTTP API)",
        description="Model versions through the HTTP API. list [MODEL_TYPE]: versions and the "
        "champion ledger (every move, validated, manual or rollback, with who or what made it "
        "and when); show MODEL_TYPE VERSION: one version with its checks; promote MODEL_TYPE "
        "VERSION --reason TEXT; rollback MODEL_TYPE (both need FCL_API_TOKEN); shadow MODEL_TYPE "
        "[VERSION | --clear]: a challenger scored beside the champion, and the two compared.",
    )
    versions_sub = versions_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = versions_sub.add_parser("list", help="versions and the champion ledger")
    listing.add_argument("model_type", nargs="?", choices=model_type_names)
    common(listing)
    show = versions_sub.add_parser("show", help="one version, its checks and its champion moves")
    show.add_argument("model_type", choices=model_type_names)
    show.add_argument("version", type=int)
    common(show)
    promote = versions_sub.add_parser("promote", help="make a recorded version the champion by hand")
    promote.add_argument("model_type", choices=model_type_names)
    promote.add_argument("version", type=int)
    promote.add_argument("--reason", required=True, help="why (kept in the ledger)")
    expected = "refused unless this version is the champion now (what you looked at)"
    promote.add_argument("--expected-version", type=int, metavar="N", help=expected)
    common(promote)
    rollback = versions_sub.add_parser("rollback", help="make the previous champion the champion again")
    rollback.add_argument("model_type", choices=model_type_names)
    rollback.add_argument("--expected-version", type=int, metavar="N", help=expected)
    common(rollback)
    shadow = versions_sub.add_parser(
        "shadow",
        help="a shadow challenger: scored on the champion's inputs, compared on the same outcomes",
        description="shadow MODEL_TYPE VERSION: the watchers that log predictions also score VERSION on the "
        "champion's inputs, never serving it (FCL_API_TOKEN); shadow MODEL_TYPE: the champion and the challenger "
        "side by side on the same outcomes; shadow MODEL_TYPE --clear: stop.",
    )
    shadow.add_argument("model_type", choices=model_type_names)
    shadow.add_argument("version", type=int, nargs="?", help="the version to score in the shadow")
    shadow.add_argument("--clear", action="store_true", help="stop scoring a challenger")
    shadow.add_argument("--window", choices=("hour", "day"), default="day", help="the comparison's window")
    common(shadow)
    versions_parser.set_defaults(func=versions)

    history_parser = sub.add_parser(
        "history",
        help="the training history, newest first (over the HTTP API)",
        description="Training events, newest first, with what became of each version "
        "(serving, since replaced, or why it was not promoted).",
    )
    history_parser.add_argument("--limit", type=int, default=20)
    history_parser.add_argument("--model-type", choices=model_type_names)
    history_parser.add_argument("--status", help="completed, failed, cancelled, ...")
    history_parser.add_argument("--before", help="the cursor a previous page printed")
    common(history_parser)
    history_parser.set_defaults(func=history)

"""The operator CLI's HTTP client tries a request again after a gateway's 502/503/504 or a dropped
connection (with the one backoff), under the same Idempotency-Key, and turns what it cannot mend
into one `OperatorError` line."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fcl.operator import Client, OperatorError

Api = tuple[str, list[tuple[str, str | None]], list[int]]  # its URL, what it saw, its script


@pytest.fixture
def api() -> Iterator[Api]:
    """A server that answers each request with the next status of `script` (200 when it runs out),
    and records (path, Idempotency-Key) of each."""
    seen: list[tuple[str, str | None]] = []
    script: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append((self.path, self.headers.get("Idempotency-Key")))
            status = script.pop(0) if script else 200
            body = (
                json.dumps({"ok": len(seen)})
                if status == 200
                else json.dumps({"error": {"code": "nope", "message": f"status {status}"}})
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen, script
    finally:
        server.shutdown()
        server.server_close()


def test_a_gateway_error_is_tried_again_under_the_same_idempotency_key(api: Api) -> None:
    url, seen, script = api
    script += [503, 502]
    assert Client(url, None).call("POST", "/x", {"a": 1}) == {"ok": 3}
    assert len(seen) == 3
    keys = {key for _, key in seen}
    assert len(keys) == 1 and None not in keys  # one key for all three tries


def test_a_refusal_is_not_tried_again_and_reads_as_one_line(api: Api) -> None:
    url, seen, script = api
    script += [409]
    with pytest.raises(OperatorError, match=r"^409 nope: status 409$"):
        Client(url, None).call("GET", "/x")
    assert len(seen) == 1


def test_gateway_errors_past_the_last_try_are_reported(api: Api) -> None:
    url, seen, script = api
    script += [504, 504]
    with pytest.raises(OperatorError, match="504 nope"):
        Client(url, None).call("GET", "/x", tries=2)
    assert len(seen) == 2


def test_an_api_that_is_not_there_is_reported_after_its_tries() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OperatorError, match=r"cannot be reached .*is `fcl web` running"):
        Client(f"http://127.0.0.1:{port}", None, timeout=2.0).call("GET", "/x", tries=2)

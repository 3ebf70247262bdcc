"""The HTTP sender of ``funnel simulate --to http`` (and of the fault table) retries a
collector that died mid-request: the connection closed without an answer is retried like a
503, not the end of the run (found by the fault table, issue 19)."""

from __future__ import annotations

import http.server
import json
from datetime import UTC, datetime

from producers.messiness import Arrival
from producers.replay import send_http
from tests.servers import serve_handler


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Closes the first connection without a word (a killed process), then answers."""

    calls = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).calls == 1:
            self.close_connection = True
            return  # no status line: the client sees the connection closed
        body = json.dumps({"accepted": 1, "rejected": []}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_connection_closed_without_an_answer_is_retried() -> None:
    arrival = Arrival(datetime.now(UTC), {"type": "impression", "anonymous_id": "a"}, "event")
    with serve_handler(_Flaky) as url:
        sent = send_http([arrival], url, "key", retries=3)
    assert sent.accepted == 1
    assert _Flaky.calls == 2

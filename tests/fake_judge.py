"""A local OpenAI-compatible chat endpoint for tests, with scripted replies."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

Responder = Callable[[dict[str, Any]], tuple]
"""body -> (status, reply) or (status, reply, headers)."""


class FakeJudgeServer(ThreadingHTTPServer):
    """A local OpenAI-compatible endpoint whose replies come from ``responder``."""

    def __init__(self, responder: Responder) -> None:
        super().__init__(("127.0.0.1", 0), FakeJudgeHandler)
        self.responder = responder
        self.calls: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and left (tests of hanging judges do that on purpose)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class FakeJudgeHandler(BaseHTTPRequestHandler):
    server: FakeJudgeServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.calls.append((self.path, dict(self.headers), body))
        status, reply, *headers = self.server.responder(body)
        self._send(status, reply, *headers)

    def do_GET(self) -> None:
        self._send(200, {"object": "list", "data": []})

    def _send(self, status: int, reply: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(reply).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def chat_reply(text: str) -> tuple[int, dict[str, Any]]:
    return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


@pytest.fixture
def fake_judge() -> Iterator[Callable[[Responder], FakeJudgeServer]]:
    servers: list[FakeJudgeServer] = []

    def start(responder: Responder) -> FakeJudgeServer:
        server = FakeJudgeServer(responder)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()

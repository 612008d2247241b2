"""A local OpenAI-compatible server that streams completions the way vLLM's does (``/health``, ``/v1/models``,
streamed ``/v1/completions`` with a usage event), for tests of the load generator and of serving items without an
engine. A real HTTP server on 127.0.0.1: the boundary faked is the engine behind it, nothing of ours.

Each request streams ``max_tokens`` chunks of one token, ``token_s`` apart (0: as fast as it can), and the server
records what it saw: bodies, and the most requests it had in flight at once.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Listener(ThreadingHTTPServer):
    request_queue_size = 256  # a load at rate inf connects all at once; the default backlog (5) drops SYNs for 1 s


class FakeOpenAIServer:
    def __init__(
        self,
        model: str = "fake-model",
        token_s: float = 0.0,
        fail_every: int = 0,
        usage: bool = True,
        prefix_cache_reset: bool = True,
    ):
        self.model = model
        self.token_s = token_s
        self.fail_every = fail_every  # every k-th completion request answers HTTP 500
        self.usage = usage
        self.prefix_cache_reset = prefix_cache_reset  # whether it serves vLLM's POST /reset_prefix_cache
        self.resets = 0
        self.bodies: list[dict[str, Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        self._server = _Listener(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._json(200, {})
                elif self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:
                if self.path == "/reset_prefix_cache":
                    if fake.prefix_cache_reset:
                        fake.resets += 1
                    self._json(200 if fake.prefix_cache_reset else 404, {})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    fake.bodies.append(body)
                    number = len(fake.bodies)
                    fake.in_flight += 1
                    fake.most_in_flight = max(fake.most_in_flight, fake.in_flight)
                self.in_flight = True
                if self.path != "/v1/completions" or (fake.fail_every and number % fake.fail_every == 0):
                    self._done()
                    self._json(500, {"error": "failed on purpose"})
                    return
                try:
                    self._stream(body)
                finally:
                    self._done()

            def _done(self) -> None:
                """Out of flight before the last byte: the client frees its slot (and may send the next request) as
                soon as it has read it, maybe before this thread runs again."""
                with fake._lock:
                    fake.in_flight -= self.in_flight  # once, however the request ends
                    self.in_flight = False

            def _stream(self, body: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for k in range(body["max_tokens"]):
                    if fake.token_s:
                        time.sleep(fake.token_s)
                    self._event({"choices": [{"index": 0, "text": f" t{k}"}]})
                if fake.usage:
                    prompt_tokens = len(body["prompt"].split())
                    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": body["max_tokens"]}
                    self._event({"choices": [], "usage": usage})
                self._done()
                self.wfile.write(b"data: [DONE]\n\n")

            def _event(self, event: dict[str, Any]) -> None:
                self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                self.wfile.flush()

        return Handler

"""A small OpenAI-compatible chat-completions server on loopback, for tests of the production client.

It answers `POST /v1/chat/completions` with what its `reply` function returns for each request:
either text (wrapped into a chat completion with usage counts) or a raw (status, headers, body)
for failure paths. It records every request's body and Authorization header, and the most
requests it ever had in flight at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Raw = tuple[int, dict[str, str], bytes]
Reply = Callable[[dict[str, Any], int], "str | Raw"]  # (request body, request number from 0) -> reply


@dataclass
class Server:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def completion(text: str, prompt_tokens: int = 50, completion_tokens: int = 8) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        }
    ).encode()


def last_user_turn(body: dict[str, Any]) -> str:
    return next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")


@contextmanager
def serve(reply: Reply, *, delay: float = 0.0) -> Iterator[Server]:
    state = Server(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                n = len(state.requests)
                state.requests.append(body)
                state.auth.append(self.headers.get("Authorization"))
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                time.sleep(delay)
                out = reply(body, n) if self.path == "/v1/chat/completions" else (404, {}, b"not found")
                status, headers, payload = (200, {}, completion(out)) if isinstance(out, str) else out
            finally:
                with state.lock:
                    state.in_flight -= 1
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()

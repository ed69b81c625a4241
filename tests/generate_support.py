"""Helpers for the generation tests: Model artifacts of the tiny test models, and a scripted HTTP server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable


def model_of(path: Path | str, fingerprint: str = "test:tiny-qwen2", **source: Any) -> dict:
    from engine.models.resolve import model_artifact

    return model_artifact(path, source={"source": "local", "path": str(path), **source}, fingerprint=fingerprint)


class ScriptedServer:
    """An HTTP server on 127.0.0.1 whose reply to each request is decided by `behave(server, path, body, attempt)`.

    `behave` returns (status, body: dict | str | bytes, headers) or the string "drop" (close without a reply);
    `attempts[key]` counts requests per key (the prompt text), `in_flight_max` the peak concurrency.
    """

    def __init__(self, behave: Callable[..., Any]):
        self.behave = behave
        self.attempts: dict[str, int] = {}
        self.headers_seen: list[dict] = []
        self.in_flight = self.in_flight_max = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self, body: Any) -> None:
                key = prompt_key(body)
                with server.lock:
                    server.attempts[key] = server.attempts.get(key, 0) + 1
                    attempt = server.attempts[key]
                    server.in_flight += 1
                    server.in_flight_max = max(server.in_flight_max, server.in_flight)
                    server.headers_seen.append(dict(self.headers))
                try:
                    reply = server.behave(server, self.path, body, attempt)
                finally:
                    with server.lock:
                        server.in_flight -= 1
                if reply == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                status, payload, headers = reply
                data = payload if isinstance(payload, bytes) else (
                    payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._handle(json.loads(self.rfile.read(length) or b"{}"))

            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlparse

                query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
                self._handle(query)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def prompt_key(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("messages"), list) and body["messages"]:
        return str(body["messages"][-1].get("content"))
    if isinstance(body, dict):
        return str(body.get("message") or body.get("prompt") or "")
    return ""


def chat_reply(texts: list[str], finish: str = "stop") -> dict:
    return {"id": "x", "object": "chat.completion", "choices": [
        {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": finish} for i, t in enumerate(texts)],
        "usage": {"prompt_tokens": 3, "completion_tokens": len(texts)}}


def slow(seconds: float) -> None:
    time.sleep(seconds)

"""An OpenAI-compatible HTTP server over any generator: `recipe serve MODEL_OR_RUN` and the `serve` step.

Routes: `GET /v1/models`, `POST /v1/chat/completions` (messages, n, temperature, top_p, max_tokens /
max_completion_tokens, stop, seed, logprobs + top_logprobs, chat_template_kwargs), `POST /v1/completions`
(prompt text), `GET /health`. Streaming is not supported (400). The chat template is the one the evaluation
uses (the generator renders prompts exactly as in `collect` / `evaluate`), so a trained model benchmarked
through this server and its baseline go through the same path (seed 002).

Standard library only (`ThreadingHTTPServer`): each HTTP request thread queues its generation request; one
worker thread takes whatever is queued (up to `batch_size` requests) and generates it in one call, so
concurrent clients are batched together. A request with `seed` is reproducible (the sample seeds derive from
the seed and the rendered prompt); without one it draws fresh randomness. Nothing is cached here.
"""

from __future__ import annotations

import hashlib
import json
import queue
import random
import threading
import time
import uuid
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from engine.generate.base import GenerationRequest, GenerationResult

MAX_BODY = 32 * 1024 * 1024


class BadRequest(Exception):
    pass


class BatchingWorker:
    """Feeds queued requests to the generator in batches, one generate call at a time."""

    def __init__(self, generator: Any, batch_size: int = 16, wait: float = 0.005):
        self.generator, self.batch_size, self.wait = generator, max(1, batch_size), wait
        self.queue: "queue.Queue[Optional[tuple[GenerationRequest, Future]]]" = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="recipe-serve-worker", daemon=True)
        self.thread.start()

    def submit(self, request: GenerationRequest) -> GenerationResult:
        future: Future = Future()
        self.queue.put((request, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            batch = [item]
            deadline = time.monotonic() + self.wait
            while len(batch) < self.batch_size:
                try:
                    nxt = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self.queue.put(None)
                    break
                batch.append(nxt)
            try:
                results = self.generator.generate([r for r, _ in batch])
                for (_, future), result in zip(batch, results):
                    future.set_result(result)
            except BaseException as err:  # noqa: BLE001 - every waiting client gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)

    def stop(self) -> None:
        self.queue.put(None)


def _number(body: dict, name: str, default: Any, kind: type, lo: float, hi: float) -> Any:
    value = body.get(name, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"`{name}` must be a number")
    value = kind(value)
    if not lo <= value <= hi:
        raise BadRequest(f"`{name}` must be between {lo:g} and {hi:g}")
    return value


def parse_request(body: dict, chat: bool, render: Any, default_max_tokens: int) -> GenerationRequest:
    """The GenerationRequest of an OpenAI request body (BadRequest when malformed)."""
    if body.get("stream"):
        raise BadRequest("streaming is not supported by `recipe serve`; send `stream: false`")
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages):
            raise BadRequest("`messages` must be a non-empty list of {role, content} with text content")
        prompt: Any = [{"role": m["role"], "content": m["content"]} for m in messages]
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("`prompt` must be a string")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise BadRequest("`stop` must be a string or a list of strings")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    kwargs = body.get("chat_template_kwargs") or None
    if kwargs is not None and not isinstance(kwargs, dict):
        raise BadRequest("`chat_template_kwargs` must be an object")
    if chat:
        logprobs = (_number(body, "top_logprobs", 0, int, 0, 20) if body.get("logprobs") else None)
    else:
        logprobs = _number(body, "logprobs", 0, int, 0, 20) if body.get("logprobs") is not None else None
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("`seed` must be an integer")
    text = render(prompt, kwargs)
    key = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return GenerationRequest(
        id=key, prompt=prompt, n=_number(body, "n", 1, int, 1, 128),
        temperature=_number(body, "temperature", 1.0, float, 0.0, 2.0), top_p=_number(body, "top_p", 1.0, float, 1e-6, 1.0),
        max_new_tokens=int(_number({"m": max_tokens}, "m", default_max_tokens, int, 1, 1 << 20)), stop=tuple(stop),
        seed=seed if seed is not None else random.getrandbits(62), logprobs=logprobs, chat_template_kwargs=kwargs)


def _chat_logprobs(tokens: list[dict]) -> dict:
    return {"content": [{"token": t.get("token"), "logprob": t.get("logprob"), "bytes": None,
                         "top_logprobs": [{"token": a.get("token"), "logprob": a.get("logprob"), "bytes": None}
                                          for a in t.get("top") or []]} for t in tokens]}


def _text_logprobs(tokens: list[dict]) -> dict:
    return {"tokens": [t.get("token") for t in tokens], "token_logprobs": [t.get("logprob") for t in tokens],
            "top_logprobs": [{a.get("token"): a.get("logprob") for a in t.get("top") or []} for t in tokens],
            "text_offset": []}


def response_body(result: GenerationResult, request: GenerationRequest, model_name: str, chat: bool) -> dict:
    choices = []
    for i, (text, reason) in enumerate(zip(result.texts, result.finish_reasons)):
        lps = result.logprobs[i] if result.logprobs is not None and i < len(result.logprobs) else None
        if chat:
            choice = {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                      "logprobs": _chat_logprobs(lps) if lps is not None else None}
        else:
            choice = {"index": i, "text": text, "finish_reason": reason,
                      "logprobs": _text_logprobs(lps) if lps is not None else None}
        choices.append(choice)
    usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
             "total_tokens": result.prompt_tokens + result.completion_tokens}
    return {"id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24],
            "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": model_name, "choices": choices, "usage": usage}


class ModelServer:
    """`ModelServer(generator, name).start()` serves in a background thread; `.url` is the OpenAI base URL."""

    def __init__(self, generator: Any, model_name: str = "model", *, host: str = "127.0.0.1", port: int = 0,
                 batch_size: int = 16, default_max_tokens: int = 256):
        self.generator, self.model_name = generator, model_name
        self.default_max_tokens = default_max_tokens
        self.worker = BatchingWorker(generator, batch_size)
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[0], self.httpd.server_address[1]
        self.thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> "ModelServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="recipe-serve", daemon=True)
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.worker.stop()

    def endpoint_artifact(self) -> dict:
        return {"type": "Endpoint", "url": self.url, "model": self.model_name,
                "source": {"source": "endpoint", "url": self.url, "api": "openai", "model": self.model_name}}

    def _handler(self) -> type:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet: no per-request lines on stderr
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
                self._send(status, {"error": {"message": message, "type": kind, "code": status}})

            def do_GET(self) -> None:
                path = self.path.split("?")[0].rstrip("/")
                if path in ("/v1/models", "/models"):
                    self._send(200, {"object": "list", "data": [
                        {"id": server.model_name, "object": "model", "created": 0, "owned_by": "recipe-engine"}]})
                elif path in ("/health", "/v1/health", ""):
                    self._send(200, {"status": "ok"})
                else:
                    self._error(404, f"no route {self.path}")

            def do_POST(self) -> None:
                path = self.path.split("?")[0].rstrip("/")
                routes = {"/v1/chat/completions": True, "/chat/completions": True, "/v1/completions": False,
                          "/completions": False}
                if path not in routes:
                    self._error(404, f"no route {self.path}")
                    return
                chat = routes[path]
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    if length > MAX_BODY:
                        raise BadRequest("request body too large")
                    body = json.loads(self.rfile.read(length) or b"{}")
                    if not isinstance(body, dict):
                        raise BadRequest("the body must be a JSON object")
                    request = parse_request(body, chat, server.generator.render, server.default_max_tokens)
                except Exception as err:  # noqa: BLE001 - malformed JSON, fields or a prompt the template rejects
                    self._error(400, str(err) if isinstance(err, BadRequest) else f"{type(err).__name__}: {err}")
                    return
                try:
                    result = server.worker.submit(request)
                except Exception as err:  # noqa: BLE001 - the client gets a 500, the server keeps serving
                    self._error(500, f"generation failed: {type(err).__name__}: {err}", "server_error")
                    return
                if result.error:
                    self._error(500, f"generation failed: {result.error}", "server_error")
                    return
                self._send(200, response_body(result, request, server.model_name, chat))

        return Handler


def model_from_arg(text: str, cwd: str = ".") -> dict:
    """The Model artifact named on the command line: a run directory (its `outputs.model`), a model directory
    (a PEFT adapter directory is served on its base), a .gguf file or `package:DIST/FILE`, a model block as
    inline JSON or a .yaml/.json file (`{source: tiny}`), else a hub id."""
    from pathlib import Path

    from engine.models.resolve import as_model_artifact, resolve_model

    path = Path(text).expanduser()
    if path.is_dir() and (path / "state.json").is_file():
        return resolve_model({"source": "run", "run": str(path.resolve())}, cwd)
    if path.is_dir() and (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        return adapter_artifact(path, cwd)
    if path.is_dir():
        return resolve_model({"source": "local", "path": str(path.resolve())}, cwd)
    if text.endswith(".gguf") or text.startswith("package:"):
        return resolve_model({"source": "gguf", "file": text}, cwd)
    if text.lstrip().startswith("{"):
        return as_model_artifact(json.loads(text), cwd)
    if path.is_file() and path.suffix in (".yaml", ".yml", ".json"):
        from ruamel.yaml import YAML

        block = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
        return as_model_artifact(block, path.parent)
    return resolve_model({"source": "hub", "path": text}, cwd)


def adapter_artifact(path: Any, cwd: str = ".") -> dict:
    """A PEFT adapter directory as an adapter Model artifact on the base its adapter_config.json names."""
    from pathlib import Path

    from engine.data.fingerprints import fingerprint_path
    from engine.models.resolve import model_artifact, resolve_model

    path = Path(path).resolve()
    base_name = json.loads((path / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base_name:
        from engine.recipe.errors import EngineError

        raise EngineError(f"{path}/adapter_config.json names no base model (base_model_name_or_path)")
    base_dir = Path(base_name).expanduser()
    base = resolve_model({"source": "local", "path": str(base_dir)} if base_dir.is_dir() else {"source": "hub", "path": base_name}, cwd)
    digest = fingerprint_path(path)["sha256"]
    return model_artifact(path, source={"source": "local", "path": str(path)}, kind="adapter", base=base,
                          fingerprint=f"adapter:{digest}:{base.get('fingerprint')}")


def display_name(model: dict, given: Optional[str] = None) -> str:
    if given:
        return given
    source = model.get("source") or {}
    from pathlib import Path

    return str(source.get("name") or source.get("model") or Path(str(model.get("path") or "model")).name)


def serve(model: dict, *, host: str = "127.0.0.1", port: int = 8000, engine: str = "auto", name: Optional[str] = None,
          batch_size: int = 16, echo: Any = print) -> None:
    """Serve `model` until interrupted (the `recipe serve` command)."""
    from engine.generate.engines import open_generator

    generator = open_generator(model, generator=engine, batch_size=batch_size, cache=False, progress=False)
    server = ModelServer(generator, display_name(model, name), host=host, port=port, batch_size=batch_size)
    echo(f"serving {server.model_name} ({generator.name}) at {server.url}  (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        generator.close()

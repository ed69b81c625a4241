"""`generator: endpoint`: an HTTP model, OpenAI-compatible or a custom chat API (seed 002's `POST /chat`).

`api: openai` posts chat messages to `{url}/chat/completions` (raw-text prompts to `{url}/completions`) with
`n`, `temperature`, `top_p`, `max_tokens`, `stop`, `seed` and, when asked, `logprobs` / `top_logprobs`; a server
that returns fewer than `n` choices is asked again for the rest. `api: custom` sends one request per sample,
built from the endpoint's `request` mapping: `body` string values are Jinja templates over `prompt` (the last
user message), `system`, `messages` and `model` (a value that is exactly `{{ name }}` keeps its type), and the
reply text is read at the dotted `response_field` (list indices allowed: `choices.0.text`).

Requests run concurrently (asyncio + httpx) under the endpoint's `concurrency` limit, each with its `timeout`.
429, 408, 5xx, timeouts, connection errors and unparseable replies are retried `retries` times with
exponential backoff and jitter (honouring a numeric Retry-After); other 4xx are not retried. A request that
still fails becomes a result with `error` set (the reason and the attempts), never dropped, and is counted in
`counts`. The API key comes only from the environment variable named by `api_key: ${env:NAME}`; it is sent
as `Authorization: Bearer` and never logged or written.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
from typing import Any, Optional, Sequence

from engine.generate.aio import run_sync
from engine.generate.base import Counts, GenerationRequest, GenerationResult, Prompt, failed, sample_seed, trim_at_stop
from engine.generate.progress import GenerationProgress
from engine.recipe.errors import EngineError

_ENV_REF = re.compile(r"^\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}$")
_WHOLE = re.compile(r"^\{\{\s*(prompt|system|messages|model)\s*\}\}$")
RETRY_STATUS = {408, 409, 425, 429}


class _Retryable(Exception):
    """A failure worth another attempt (status, timeout, connection, garbage)."""

    def __init__(self, reason: str, retry_after: Optional[float] = None):
        super().__init__(reason)
        self.retry_after = retry_after


class _Final(Exception):
    """A failure another attempt would not fix (e.g. HTTP 400)."""


def api_key_from(value: Optional[str]) -> Optional[str]:
    """The key named by `${env:NAME}` (read now, from the environment); a value already resolved passes through."""
    if not value:
        return None
    match = _ENV_REF.match(value.strip())
    if not match:
        return value
    key = os.environ.get(match.group(1))
    if not key:
        raise EngineError(f"the endpoint's api_key names the environment variable {match.group(1)}, which is not set; "
                          f"export it before running")
    return key


def dotted(data: Any, path: str) -> Any:
    """`data["a"]["b"][0]` for `a.b.0`; KeyError/IndexError/TypeError when absent."""
    node = data
    for part in path.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


class EndpointGenerator:
    name = "endpoint"
    fingerprint = None  # the model behind a URL can change: endpoint generations are not cached

    def __init__(self, source: dict, *, progress: Optional[bool] = None, backoff: float = 1.0, max_backoff: float = 30.0):
        if "url" not in source:
            raise EngineError("an endpoint model needs `url:`")
        self.source = source
        self.url = str(source["url"]).rstrip("/")
        self.api = source.get("api") or "openai"
        self.model = source.get("model")
        self.headers = {str(k): str(v) for k, v in (source.get("headers") or {}).items()}
        key = api_key_from(source.get("api_key"))
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.mapping = dict(source.get("request") or {})
        self.concurrency = int(source.get("concurrency") or 8)
        self.timeout = float(source.get("timeout") or 120.0)
        self.retries = int(source.get("retries") if source.get("retries") is not None else 4)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.progress = progress
        self.counts = Counts()

    def __repr__(self) -> str:  # never shows headers (the key)
        return f"EndpointGenerator({self.url!r}, api={self.api!r}, model={self.model!r})"

    def render(self, prompt: Prompt, chat_template_kwargs: Optional[dict] = None) -> str:
        """The server applies its chat template; the canonical text of a request is its messages as JSON."""
        return prompt if isinstance(prompt, str) else json.dumps(list(prompt), ensure_ascii=False, sort_keys=True)

    # --- public --------------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return run_sync(self.agenerate(requests))

    async def agenerate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        import httpx

        semaphore = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout, headers=self.headers, limits=limits) as client:
            with GenerationProgress(len(requests), f"generate ({self.url})", self.progress) as bar:
                async def one(request: GenerationRequest) -> GenerationResult:
                    result = await self._one(client, semaphore, request)
                    bar.advance(1, result.completion_tokens)
                    return result

                results = list(await asyncio.gather(*(one(r) for r in requests)))
        for r in results:
            self.counts.add(r)
        return results

    def logprobs_for(self, prompts: Sequence[Prompt], candidates: Sequence[str],
                     chat_template_kwargs: Optional[dict] = None) -> list[dict[str, Optional[float]]]:
        """log P of each candidate as the first answer token, read from the top 20 alternatives (None: not among
        them). Needs an OpenAI-compatible endpoint with log-probs."""
        if self.api != "openai":
            raise EngineError("judgment log-probs need an OpenAI-compatible endpoint (`api: openai`); with a custom API "
                              "use `judgment: {probability: samples}`")
        requests = [GenerationRequest(id=str(i), prompt=p, n=1, temperature=0.0, max_new_tokens=1, logprobs=20,
                                      chat_template_kwargs=chat_template_kwargs) for i, p in enumerate(prompts)]
        out = []
        for result in self.generate(requests):
            if result.error or not result.logprobs or not result.logprobs[0]:
                raise EngineError(f"the endpoint returned no log-probs: {result.error or 'empty logprobs'}")
            first = result.logprobs[0][0]
            table = {t["token"]: t["logprob"] for t in first.get("top") or []}
            table.setdefault(first["token"], first["logprob"])
            out.append({c: table.get(c) for c in candidates})
        return out

    def close(self) -> None:
        pass

    # --- one request ---------------------------------------------------------------------------------

    async def _one(self, client: Any, semaphore: asyncio.Semaphore, request: GenerationRequest) -> GenerationResult:
        try:
            if self.api == "custom":
                calls = request.n if request.temperature > 0 else 1  # greedy: one call, its reply n times
                samples = await asyncio.gather(*(self._custom(client, semaphore, request) for _ in range(calls)),
                                               return_exceptions=True)
                errors = [s for s in samples if isinstance(s, BaseException)]
                if errors:
                    raise errors[0]
                texts = [trim_at_stop(str(t), request.stop)[0] for t in samples] * (request.n // calls)
                return GenerationResult(id=request.id, texts=list(texts), finish_reasons=["stop"] * request.n)
            return await self._openai(client, semaphore, request)
        except (_Retryable, _Final) as err:
            return failed(request, str(err))

    async def _openai(self, client: Any, semaphore: asyncio.Semaphore, request: GenerationRequest) -> GenerationResult:
        chat = not isinstance(request.prompt, str)
        texts: list[str] = []
        reasons: list[str] = []
        logprobs: list[list[dict]] = []
        prompt_tokens = completion_tokens = 0
        wanted = request.n if request.temperature > 0 else 1  # greedy samples are all the same text
        while len(texts) < wanted:
            body = self._openai_body(request, wanted - len(texts), chat)
            data = await self._call(client, semaphore, "POST", self.url + ("/chat/completions" if chat else "/completions"),
                                    body, lambda d: _choices(d, chat))
            choices = _choices(data, chat)
            for choice in choices[: wanted - len(texts)]:
                text, lps = _choice_text(choice, chat)
                text, cut = trim_at_stop(text, request.stop)
                texts.append(text)
                reasons.append("stop" if cut else str(choice.get("finish_reason") or "stop"))
                logprobs.append(lps)
            usage = data.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or prompt_tokens)
            completion_tokens += int(usage.get("completion_tokens") or 0)
        if len(texts) < request.n:  # greedy: asked once, the same text n times
            copies = request.n // len(texts)
            texts, reasons, logprobs, completion_tokens = (texts * copies, reasons * copies, logprobs * copies,
                                                           completion_tokens * copies)
        return GenerationResult(id=request.id, texts=texts, finish_reasons=reasons,
                                logprobs=logprobs if request.logprobs is not None else None,
                                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    def _openai_body(self, request: GenerationRequest, n: int, chat: bool) -> dict:
        body: dict[str, Any] = {"model": self.model or "default", "n": n, "temperature": request.temperature,
                                "max_tokens": request.max_new_tokens}
        body["messages" if chat else "prompt"] = list(request.prompt) if chat else request.prompt
        if request.top_p < 1.0:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = list(request.stop)
        if request.temperature > 0 and request.seed is not None:
            body["seed"] = sample_seed(request.seed, request.id, 0) % (2**31)
        if request.logprobs is not None:
            if chat:
                body["logprobs"] = True
                if request.logprobs:
                    body["top_logprobs"] = request.logprobs
            else:
                body["logprobs"] = max(request.logprobs, 0)
        if request.chat_template_kwargs and chat:
            body["chat_template_kwargs"] = dict(request.chat_template_kwargs)
        return body

    async def _custom(self, client: Any, semaphore: asyncio.Semaphore, request: GenerationRequest) -> str:
        method = str(self.mapping.get("method") or "POST").upper()
        path = str(self.mapping.get("path") or "/chat")
        field = str(self.mapping.get("response_field") or "response")
        body = _render_body(self.mapping.get("body") or {"message": "{{ prompt }}"}, request.prompt, self.model)

        def parse(data: Any) -> str:
            value = dotted(data, field)
            if not isinstance(value, str):
                raise TypeError(f"`{field}` is {type(value).__name__}, not text")
            return value

        data = await self._call(client, semaphore, method, self.url + path, body, parse)
        return parse(data)

    async def _call(self, client: Any, semaphore: asyncio.Semaphore, method: str, url: str, body: dict,
                    check: Any) -> Any:
        """One HTTP exchange with retries; returns the parsed JSON (validated by `check`) or raises _Final."""
        import httpx

        reason = "no attempt"
        for attempt in range(self.retries + 1):
            wait: Optional[float] = None
            try:
                async with semaphore:
                    if method == "GET":
                        response = await client.get(url, params={k: _flat(v) for k, v in body.items()})
                    else:
                        response = await client.request(method, url, json=body)
                status = response.status_code
                if status in RETRY_STATUS or status >= 500:
                    raise _Retryable(f"HTTP {status}", _retry_after(response.headers.get("retry-after")))
                if status >= 400:
                    raise _Final(f"HTTP {status}: {response.text[:200]}")
                try:
                    data = response.json()
                    check(data)
                except (ValueError, KeyError, IndexError, TypeError) as err:
                    raise _Retryable(f"bad response ({type(err).__name__}: {str(err)[:120]}): {response.text[:120]!r}")
                return data
            except _Retryable as err:
                reason, wait = str(err), err.retry_after
            except httpx.TimeoutException:
                reason = f"timeout after {self.timeout:g}s"
            except httpx.TransportError as err:
                reason = f"connection error ({type(err).__name__})"
            if attempt < self.retries:
                self.counts.retries += 1
                delay = min(self.max_backoff, self.backoff * 2 ** attempt) * (0.5 + random.random() / 2)
                await asyncio.sleep(min(self.max_backoff, wait) if wait is not None else delay)
        raise _Final(f"{reason} (gave up after {self.retries + 1} attempts)")


def _choices(data: Any, chat: bool) -> list[dict]:
    choices = data["choices"]
    if not isinstance(choices, list) or not choices:
        raise ValueError("no choices in the reply")
    choices = sorted(choices, key=lambda c: c.get("index", 0))
    for c in choices:
        _choice_text(c, chat)
    return choices


def _choice_text(choice: dict, chat: bool) -> tuple[str, list[dict]]:
    if chat:
        text = choice["message"]["content"]
        content = ((choice.get("logprobs") or {}).get("content")) or []
        lps = [{"token": t["token"], "logprob": t["logprob"],
                "top": [{"token": a["token"], "logprob": a["logprob"]} for a in t.get("top_logprobs") or []]}
               for t in content]
    else:
        text = choice["text"]
        legacy = choice.get("logprobs") or {}
        tokens, values = legacy.get("tokens") or [], legacy.get("token_logprobs") or []
        tops = legacy.get("top_logprobs") or [None] * len(tokens)
        lps = [{"token": t, "logprob": v, "top": [{"token": k, "logprob": x} for k, x in (top or {}).items()]}
               for t, v, top in zip(tokens, values, tops)]
    if text is None:
        text = ""  # e.g. a reply that is only a tool call
    if not isinstance(text, str):
        raise TypeError("reply text is not a string")
    return text, lps


def _render_body(template: Any, prompt: Prompt, model: Optional[str]) -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    system = next((m["content"] for m in messages if m.get("role") == "system"), "")
    context = {"prompt": user, "system": system, "messages": messages, "model": model}
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            whole = _WHOLE.match(node.strip())
            return context[whole.group(1)] if whole else env.from_string(node).render(context)
        return node

    return walk(template)


def _flat(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _retry_after(value: Optional[str]) -> Optional[float]:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None

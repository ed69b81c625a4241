"""The one generator interface every engine (transformers, vllm, endpoint) implements, and what it trades in.

    generate(requests: list[GenerationRequest]) -> list[GenerationResult]      one result per request, same order
    logprobs_for(prompts, candidates) -> list[dict[str, float | None]]         one forward pass, no sampling
    render(prompt, chat_template_kwargs) -> str                                 the prompt text the model sees
    close()                                                                     free the model / stop the server

A request carries all `n` samples of one prompt (they are drawn in one call: `num_return_sequences`-style
expansion, `SamplingParams(n=N)`, or `"n": N` over HTTP). A failed request is never dropped: its result has
`error` set, `texts` of None and finish reason "error", and the caller counts it.

Seeds: sample `j` of the request with id `ID` under run seed `S` draws from `sample_seed(S, ID, j)`, whatever
batch the request lands in (see docs/generation.md), so a resumed collection draws what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence, Union

Prompt = Union[str, list[dict]]   # raw text (sent as is), or chat messages [{role, content}] (chat template applied)


@dataclass(frozen=True)
class GenerationRequest:
    id: str
    prompt: Prompt
    n: int = 1
    temperature: float = 0.0                 # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: Optional[int] = None               # the run seed; per-sample seeds derive from (seed, id, index)
    logprobs: Optional[int] = None           # None: none; 0: the chosen tokens' log-probs; k: also the top k
    chat_template_kwargs: Optional[dict] = None

    def settings(self) -> dict:
        """What decides the outputs besides the prompt text (part of the cache key)."""
        sampled = self.temperature > 0
        return {"n": self.n, "temperature": self.temperature, "top_p": self.top_p if sampled else 1.0,
                "max_new_tokens": self.max_new_tokens, "stop": list(self.stop), "logprobs": self.logprobs,
                # greedy outputs do not depend on seeds; sampled ones on the run seed and the request id
                "seed": [self.seed, self.id] if sampled else None}


@dataclass
class GenerationResult:
    id: str
    texts: list[Optional[str]]               # n texts (None for a failed request)
    finish_reasons: list[str]                # "stop" (eos or a stop string), "length", "error"
    error: Optional[str] = None              # why the request failed (after retries); None when it worked
    logprobs: Optional[list[list[dict]]] = None  # per sample, per token: {"token", "logprob", "top": [{token, logprob}]}
    prompt_tokens: int = 0
    completion_tokens: int = 0               # summed over the n samples
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        out = {"id": self.id, "texts": self.texts, "finish_reasons": self.finish_reasons, "error": self.error,
               "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}
        if self.logprobs is not None:
            out["logprobs"] = self.logprobs
        return out

    @classmethod
    def from_dict(cls, data: dict, *, cached: bool = False) -> "GenerationResult":
        return cls(id=data["id"], texts=list(data["texts"]), finish_reasons=list(data["finish_reasons"]),
                   error=data.get("error"), logprobs=data.get("logprobs"), prompt_tokens=data.get("prompt_tokens", 0),
                   completion_tokens=data.get("completion_tokens", 0), cached=cached)


def failed(request: GenerationRequest, reason: str) -> GenerationResult:
    """The result of a request that could not be generated: recorded with its reason, never dropped."""
    return GenerationResult(id=request.id, texts=[None] * request.n, finish_reasons=["error"] * request.n, error=reason)


class Generator(Protocol):
    name: str
    fingerprint: Optional[str]   # of the model; None when outputs cannot be cached (e.g. an endpoint)

    def render(self, prompt: Prompt, chat_template_kwargs: Optional[dict] = None) -> str: ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]: ...

    def logprobs_for(self, prompts: Sequence[Prompt], candidates: Sequence[str],
                     chat_template_kwargs: Optional[dict] = None) -> list[dict[str, Optional[float]]]: ...

    def close(self) -> None: ...


def sample_seed(seed: Optional[int], key: str, index: int) -> int:
    """The seed of sample `index` of the prompt `key` under run seed `seed` (63-bit, stable across processes)."""
    digest = hashlib.sha256(f"{seed}\x00{key}\x00{index}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def trim_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` cut before the earliest stop string (OpenAI semantics: the stop string is not returned)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def settings_key(request: GenerationRequest, prompt_text: str) -> str:
    """Identity of a generation: the rendered prompt plus the settings (the model is keyed separately)."""
    body = json.dumps({"prompt": prompt_text, **request.settings()}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def as_request(prompt: Prompt, index: int, **settings: Any) -> GenerationRequest:
    stop = settings.pop("stop", ()) or ()
    return GenerationRequest(id=str(settings.pop("id", index)), prompt=prompt, stop=tuple(stop), **settings)


class ChatText:
    """Text in, text out over any generator: `generate(prompts) -> list[str | None]` (the first sample of each).

    This is the shape the LLM judge (engine/score/judge.py) calls; failures come back as None and the judge
    counts them. `settings` are GenerationRequest fields (temperature, max_new_tokens, stop, seed, ...).
    """

    def __init__(self, generator: Generator, **settings: Any):
        self.generator = generator
        self.settings = settings
        self.failures: list[str] = []

    def generate(self, prompts: Sequence[Prompt]) -> list[Optional[str]]:
        requests = [as_request(p, i, **dict(self.settings)) for i, p in enumerate(prompts)]
        results = self.generator.generate(requests)
        self.failures.extend(r.error for r in results if r.error)
        return [r.texts[0] if r.ok and r.texts else None for r in results]

    def close(self) -> None:
        self.generator.close()


@dataclass
class Counts:
    """Running totals a generator keeps (reported by collect and the benchmark)."""

    requests: int = 0
    failed: int = 0
    retries: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, result: GenerationResult) -> None:
        self.requests += 1
        self.cached += int(result.cached)
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        if result.error:
            self.failed += 1
            reason = result.error.split(":")[0][:80]
            self.reasons[reason] = self.reasons.get(reason, 0) + 1

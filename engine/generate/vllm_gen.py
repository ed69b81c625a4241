"""`generator: vllm`: vLLM in this process when `import vllm` works, else a vLLM server from the side environment.

In process (typical on a GPU box): one `LLM` per base model with prefix caching; the n samples of a prompt are
`SamplingParams(n=N)`; a sampled request carries `seed=sample_seed(run seed, id, 0)` so its samples do not
depend on batching; an adapter model is served as a LoRA on its base, passed per request (`LoRARequest`), so a
loop that trains a new adapter every epoch keeps the base loaded. Prompts are rendered with the same Hugging
Face tokenizer and chat template as the transformers generator and passed as token ids.

Side environment (`recipe env create vllm`, or RECIPE_ENGINE_VLLM_PYTHON): the engine starts
`python -m vllm.entrypoints.openai.api_server` there on a free 127.0.0.1 port — with our chat template file,
`--generation-config vllm` (the recipe's settings only, as in-process), LoRA modules for adapters, and the
CPU settings of STACK.md where there is no GPU — waits until it answers, and talks to it with the endpoint
generator. `close()` stops the server (its whole process group).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from engine.generate.base import (Counts, GenerationRequest, GenerationResult, Prompt, failed, sample_seed,
                                  trim_at_stop)
from engine.generate.cache import cache_for
from engine.generate.progress import GenerationProgress
from engine.recipe.errors import EngineError


def importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _adapter_and_base(model: dict) -> tuple[Optional[dict], dict]:
    if model.get("kind") != "adapter":
        return None, model
    base = model["base"]
    if base.get("kind") == "adapter":
        raise EngineError("vLLM serves one LoRA adapter on a plain base; merge the inner adapter first (`use: merge`)")
    return model, base


def _lora_rank(adapter: dict) -> int:
    config = json.loads((Path(adapter["path"]) / "adapter_config.json").read_text(encoding="utf-8"))
    return int(config.get("r") or 16)


class _Rendering:
    """Chat-template rendering shared by both vLLM paths (the transformers generator's tokenizer and rules)."""

    def _init_rendering(self, model: dict) -> None:
        from engine.generate.transformers_gen import load_tokenizer
        from engine.models.resolve import base_of

        self.tokenizer = load_tokenizer(model)
        self.default_kwargs = dict((base_of(model).get("source") or {}).get("chat_template_kwargs") or {})

    def render(self, prompt: Prompt, chat_template_kwargs: Optional[dict] = None) -> str:
        if isinstance(prompt, str):
            return prompt
        if not self.tokenizer.chat_template:
            raise EngineError("the model has no chat template; set `chat_template:` on the model or give raw-text prompts")
        kwargs = {**self.default_kwargs, **(chat_template_kwargs or {})}
        return self.tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True, **kwargs)


class VLLMGenerator(_Rendering):
    """vLLM in process."""

    name = "vllm"

    def __init__(self, model: dict, *, max_model_len: Optional[int] = None, cache: bool = True,
                 progress: Optional[bool] = None, **engine_args: Any):
        from vllm import LLM

        adapter, base = _adapter_and_base(model)
        self._init_rendering(model)
        self.base_fingerprint = base.get("fingerprint")
        self.fingerprint = model.get("fingerprint")
        source = base.get("source") or {}
        args: dict[str, Any] = {"model": base["path"], "enable_prefix_caching": True, "seed": 0,
                                "generation_config": "vllm", "trust_remote_code": bool(source.get("trust_remote_code"))}
        if base.get("tokenizer"):
            args["tokenizer"] = base["tokenizer"]
        dtype = source.get("dtype") or "auto"
        import torch

        if not torch.cuda.is_available():
            args.update(dtype="float32" if dtype == "auto" else dtype, enforce_eager=True)
        elif dtype != "auto":
            args["dtype"] = dtype
        if max_model_len:
            args["max_model_len"] = max_model_len
        if adapter is not None:
            args.update(enable_lora=True, max_lora_rank=max(16, _lora_rank(adapter)))
        args.update(engine_args)
        self.llm = LLM(**args)
        self.lora_enabled = adapter is not None
        self.adapter = adapter
        self._lora_ids: dict[str, int] = {}
        self.cache = cache_for(self.name, self.fingerprint) if cache else None
        self.progress = progress
        self.counts = Counts()

    def use(self, model: dict) -> bool:
        """Switch to `model` (an adapter on the same base): True when this engine can serve it without reloading."""
        adapter, base = _adapter_and_base(model)
        if base.get("fingerprint") != self.base_fingerprint or (adapter is not None and not self.lora_enabled):
            return False
        self.adapter, self.fingerprint = adapter, model.get("fingerprint")
        self.cache = cache_for(self.name, self.fingerprint) if self.cache is not None else None
        return True

    def _lora(self) -> Any:
        if self.adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        path = self.adapter["path"]
        lora_id = self._lora_ids.setdefault(path, len(self._lora_ids) + 1)
        return LoRARequest(f"adapter{lora_id}", lora_id, path)

    def _params(self, r: GenerationRequest) -> Any:
        from vllm import SamplingParams

        sampled = r.temperature > 0
        return SamplingParams(n=r.n if sampled else 1, temperature=r.temperature, top_p=r.top_p if sampled else 1.0,
                              max_tokens=r.max_new_tokens, stop=list(r.stop) or None,
                              seed=sample_seed(r.seed, r.id, 0) if sampled else None, logprobs=r.logprobs)

    def _encode(self, prompt: Prompt, text: str) -> dict:
        return {"prompt_token_ids": self.tokenizer(text, add_special_tokens=isinstance(prompt, str))["input_ids"]}

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        results: list[Optional[GenerationResult]] = [None] * len(requests)
        todo, prompts, params, texts = [], [], [], []
        for i, r in enumerate(requests):
            try:
                text = self.render(r.prompt, r.chat_template_kwargs)
            except Exception as err:  # noqa: BLE001
                results[i] = failed(r, f"render: {err}")
                continue
            hit = self.cache.get(r, text) if self.cache else None
            if hit is not None:
                results[i] = hit
                continue
            todo.append(i)
            texts.append(text)
            prompts.append(self._encode(r.prompt, text))
            params.append(self._params(r))
        with GenerationProgress(len(requests), f"generate ({self.name})", self.progress) as bar:
            outputs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=self._lora()) if prompts else []
            for i, text, out in zip(todo, texts, outputs):
                results[i] = self._result(requests[i], out)
                if self.cache:
                    self.cache.put(requests[i], text, results[i])
                bar.advance(1, results[i].completion_tokens)
        for r in results:
            self.counts.add(r)
        return results  # type: ignore[return-value]

    def _result(self, r: GenerationRequest, out: Any) -> GenerationResult:
        texts, reasons, lps, used = [], [], [], 0
        for o in sorted(out.outputs, key=lambda o: o.index):
            text, cut = trim_at_stop(o.text, r.stop)
            texts.append(text)
            reasons.append("stop" if cut or o.finish_reason != "length" else "length")
            used += len(o.token_ids)
            if r.logprobs is not None:
                lps.append(_vllm_logprobs(o.token_ids, o.logprobs or [], r.logprobs))
        if len(texts) < r.n:  # greedy: generated once, the same text n times
            copies = r.n // max(1, len(texts))
            texts, reasons, lps, used = texts * copies, reasons * copies, lps * copies, used * copies
        return GenerationResult(id=r.id, texts=texts, finish_reasons=reasons, logprobs=lps if r.logprobs is not None else None,
                                prompt_tokens=len(out.prompt_token_ids or []), completion_tokens=used)

    def logprobs_for(self, prompts: Sequence[Prompt], candidates: Sequence[str],
                     chat_template_kwargs: Optional[dict] = None) -> list[dict[str, Optional[float]]]:
        """log P(candidate | prompt), exactly: prompt+candidate rows scored with prompt log-probs in one batched call
        (the shared prompt prefix is computed once thanks to prefix caching)."""
        from vllm import SamplingParams

        cand_ids = {c: self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in candidates}
        rows, shape = [], []
        for p in prompts:
            ids = self._encode(p, self.render(p, chat_template_kwargs))["prompt_token_ids"]
            for c in candidates:
                rows.append({"prompt_token_ids": ids + cand_ids[c]})
                shape.append((c, len(cand_ids[c])))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate(rows, params, use_tqdm=False, lora_request=self._lora())
        out: list[dict[str, Optional[float]]] = []
        for k, (row, o) in enumerate(zip(rows, outputs)):
            c, m = shape[k]
            if k % len(candidates) == 0:
                out.append({})
            ids = row["prompt_token_ids"]
            entries = o.prompt_logprobs or []
            out[-1][c] = float(sum(entries[pos][ids[pos]].logprob for pos in range(len(ids) - m, len(ids))))
        return out

    def close(self) -> None:
        self.llm = None


def _vllm_logprobs(token_ids: Sequence[int], positions: Sequence[dict], top: int) -> list[dict]:
    out = []
    for token, table in zip(token_ids, positions):
        chosen = table.get(token)
        entry = {"token": getattr(chosen, "decoded_token", None), "id": int(token),
                 "logprob": float(chosen.logprob) if chosen is not None else None}
        if top:
            ranked = sorted(table.items(), key=lambda kv: -kv[1].logprob)[:top]
            entry["top"] = [{"token": lp.decoded_token, "id": int(i), "logprob": float(lp.logprob)} for i, lp in ranked]
        out.append(entry)
    return out


# ------------------------------------------------------------------------------------ side-environment server


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class VLLMServer(_Rendering):
    """vLLM served from the side environment; generation goes through the endpoint generator."""

    name = "vllm"

    def __init__(self, model: dict, *, python: Optional[Path] = None, port: Optional[int] = None,
                 max_model_len: Optional[int] = None, ready_timeout: float = 600.0, cache: bool = True,
                 progress: Optional[bool] = None, extra_args: Sequence[str] = ()):
        from engine.envs.vllm import locate
        from engine.generate.endpoint import EndpointGenerator

        adapter, base = _adapter_and_base(model)
        self._init_rendering(model)
        self.fingerprint = model.get("fingerprint")
        self.port = port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="recipe-vllm-"))
        served = "model"
        cmd = [str(python or locate()), "-m", "vllm.entrypoints.openai.api_server", "--model", base["path"],
               *(["--tokenizer", base["tokenizer"]] if base.get("tokenizer") else []),
               "--served-model-name", served, "--host", "127.0.0.1", "--port", str(self.port),
               "--generation-config", "vllm", "--enable-prefix-caching", "--seed", "0"]
        if self.tokenizer.chat_template:
            template = self.workdir / "chat_template.jinja"
            template.write_text(self.tokenizer.chat_template, encoding="utf-8")
            cmd += ["--chat-template", str(template)]
        dtype = (base.get("source") or {}).get("dtype") or "auto"
        env = dict(os.environ)
        if not _has_cuda():
            cmd += ["--dtype", "float32" if dtype == "auto" else dtype, "--enforce-eager", "--max-num-seqs", "16"]
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        elif dtype != "auto":
            cmd += ["--dtype", dtype]
        cmd += ["--max-model-len", str(max_model_len or 2048)]
        if adapter is not None:
            served = "adapter"
            cmd += ["--enable-lora", "--lora-modules", f"adapter={adapter['path']}",
                    "--max-lora-rank", str(max(16, _lora_rank(adapter)))]
        cmd += list(extra_args)
        self.log_path = self.workdir / "server.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}/v1"
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.close()
            raise
        self.endpoint = EndpointGenerator({"url": self.url, "model": served, "concurrency": 64, "timeout": 3600,
                                           "retries": 2}, progress=progress)
        self.cache = cache_for(self.name, self.fingerprint) if cache else None
        self.counts = self.endpoint.counts

    def _wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EngineError(f"the vLLM server exited with code {self.process.returncode} while starting; "
                                  f"log tail:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/models", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        raise EngineError(f"the vLLM server did not answer within {timeout:g}s; log tail:\n{self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        results: list[Optional[GenerationResult]] = [None] * len(requests)
        todo, texts = [], []
        for i, r in enumerate(requests):
            text = self.render(r.prompt, r.chat_template_kwargs) if self.cache else ""
            hit = self.cache.get(r, text) if self.cache else None
            if hit is not None:
                results[i] = hit
            else:
                todo.append(i)
                texts.append(text)
        fresh = self.endpoint.generate([requests[i] for i in todo]) if todo else []
        for i, text, result in zip(todo, texts, fresh):
            results[i] = result
            if self.cache:
                self.cache.put(requests[i], text, result)
        return results  # type: ignore[return-value]

    def logprobs_for(self, prompts: Sequence[Prompt], candidates: Sequence[str],
                     chat_template_kwargs: Optional[dict] = None) -> list[dict[str, Optional[float]]]:
        """log P(candidate | prompt), exactly: prompt+candidate token ids sent to /completions with vLLM's
        `prompt_logprobs`, all rows concurrently (the server batches them; prefix caching shares the prompt)."""
        from engine.generate.aio import run_sync

        cand_ids = {c: self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in candidates}
        rows = []
        for p in prompts:
            text = self.render(p, chat_template_kwargs)
            ids = self.tokenizer(text, add_special_tokens=isinstance(p, str))["input_ids"]
            rows.extend((ids + cand_ids[c], len(cand_ids[c])) for c in candidates)
        scores = run_sync(self._score_rows(rows))
        out = []
        for k in range(0, len(scores), len(candidates)):
            out.append(dict(zip(candidates, scores[k:k + len(candidates)])))
        return out

    async def _score_rows(self, rows: list[tuple[list[int], int]]) -> list[float]:
        import asyncio

        import httpx

        semaphore = asyncio.Semaphore(64)

        async def one(client: Any, ids: list[int], tail: int) -> float:
            body = {"model": self.endpoint.model, "prompt": ids, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}
            async with semaphore:
                reply = await client.post(self.url + "/completions", json=body)
            if reply.status_code != 200:
                raise EngineError(f"the vLLM server refused prompt log-probs: HTTP {reply.status_code}: {reply.text[:200]}")
            table = reply.json()["choices"][0]["prompt_logprobs"]
            return float(sum(table[pos][str(ids[pos])]["logprob"] for pos in range(len(ids) - tail, len(ids))))

        async with httpx.AsyncClient(timeout=600) as client:
            return list(await asyncio.gather(*(one(client, ids, tail) for ids, tail in rows)))

    def close(self) -> None:
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def open_vllm(model: dict, **options: Any) -> Any:
    """vLLM in process when importable, else the side environment's server."""
    if importable():
        return VLLMGenerator(model, **options)
    return VLLMServer(model, **options)

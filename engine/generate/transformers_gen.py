"""`generator: transformers`: batched `model.generate` in this process (CPU, or one GPU).

- Prompts are rendered through the tokenizer's chat template (the recipe's `chat_template` override and
  `chat_template_kwargs` applied), sorted by token length (longest first) and batched `batch_size` prompts at a
  time with left padding.
- The n samples of a prompt are drawn in the same `generate` call: each prompt row is expanded n times in the
  batch, as `num_return_sequences` does (transformers refuses `num_return_sequences` without `do_sample`, and
  sampling here goes through the greedy path, see below), and the prompt is encoded once: its KV cache is
  computed for the batch's prompts and repeated n times, so only decoding runs per sample (prefix sharing, as
  vLLM's prefix caching). Greedy requests (temperature 0) are generated once and copied n times.
- The KV cache is preallocated (transformers' StaticCache) instead of grown by concatenation at every step.
- Sampling is seeded per sample, independent of batching: a logits processor adds Gumbel noise drawn from a
  `torch.Generator` seeded with `sample_seed(run seed, request id, sample index)` to the temperature-scaled,
  top-p-filtered logits, and decoding takes the argmax. argmax(logits/T + Gumbel) is an exact draw from
  softmax(logits/T) (the Gumbel-max trick), so this samples from the same distribution as `do_sample=True`, but
  a sample's randomness no longer depends on which batch, position or process it lands in — a resumed or
  data-parallel collection draws what an uninterrupted one would (docs/generation.md).
- Only the request's own settings apply: a fresh GenerationConfig with neutral penalties, so a model's
  `generation_config.json` (e.g. repetition_penalty 1.05, top_k 20) does not leak into the recipe's settings.
- Stop strings end a row early (matched in the generated text only, as vLLM and OpenAI do) and the text is cut
  before the stop string.
- Adapters (kind "adapter") are loaded onto their base with PEFT and merged for inference.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from engine.generate.base import (Counts, GenerationRequest, GenerationResult, Prompt, failed, sample_seed,
                                  settings_key, trim_at_stop)
from engine.generate.cache import cache_for
from engine.generate.progress import GenerationProgress
from engine.recipe.errors import EngineError


def _device(device: Optional[str]) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def load_causal_lm(artifact: dict, device: str, dtype: Optional[str] = None):
    """The model of a Model artifact for inference: base weights, adapters merged in, eval mode, on `device`."""
    import torch
    from transformers import AutoModelForCausalLM

    from engine.models.resolve import base_of

    base = base_of(artifact)
    source = base.get("source") or {}
    name = dtype or source.get("dtype") or "auto"
    if name == "auto":
        cuda_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
        torch_dtype = torch.bfloat16 if cuda_bf16 else torch.float32
    else:
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    model = AutoModelForCausalLM.from_pretrained(base["path"], dtype=torch_dtype,
                                                 trust_remote_code=bool(source.get("trust_remote_code")))
    chain = []
    node = artifact
    while node.get("kind") == "adapter":
        chain.append(node)
        node = node["base"]
    if chain:
        from peft import PeftModel

        for adapter in reversed(chain):  # innermost first; each merged so the next stacks on plain weights
            model = PeftModel.from_pretrained(model, adapter["path"]).merge_and_unload()
    return model.to(device).eval()


def load_tokenizer(artifact: dict):
    """The tokenizer a model's chat template comes from (shared with training: engine.methods.job), left padding."""
    from engine.methods.job import load_tokenizer as load

    return load(artifact, padding_side="left")


class SeededSampling:
    """Logits processor: temperature, top-p, then Gumbel noise from one seeded generator per row (see module doc)."""

    def __init__(self, temperature: float, top_p: float, seeds: Sequence[int], device: Any):
        import torch

        self.temperature, self.top_p = float(temperature), float(top_p)
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        scores = scores / self.temperature
        if self.top_p < 1.0:
            from transformers.generation.logits_process import TopPLogitsWarper

            scores = TopPLogitsWarper(top_p=self.top_p)(input_ids, scores)
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g, device=scores.device) for g in self.generators])
        tiny = torch.finfo(uniform.dtype).tiny
        gumbel = -torch.log(-torch.log(uniform.clamp(min=tiny, max=1.0 - 1e-7)))
        return scores + gumbel.to(scores.dtype)


class StopStrings:
    """Stopping criterion: a row is done once its generated text (not the prompt) contains a stop string.

    transformers' own `stop_strings` also match across the prompt boundary (a prompt ending in "\n" and a first
    generated "\n" make "\n\n"); OpenAI-compatible servers and vLLM look at the generated text only, and so does
    this. Each step decodes only the last few generated tokens of each row (enough bytes for the longest stop).
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_length: int):
        self.tokenizer, self.stops, self.start = tokenizer, [s for s in stops if s], prompt_length
        self.window = max(len(s.encode("utf-8")) for s in self.stops) + 2

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        tails = input_ids[:, max(self.start, input_ids.shape[1] - self.window):].tolist()
        done = [any(s in self.tokenizer.decode(t, skip_special_tokens=True) for s in self.stops) for t in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class LogprobRecorder:
    """Logits processor (first in the list): the model's log-probs of each chosen token and the top k per step.

    At step t it sees the token chosen at step t-1 (the last column of input_ids) and reads its log-prob from the
    previous step's log-softmax, so only one step's distribution is held at a time (not steps x vocab, which is
    gigabytes for a 150k vocabulary); `finish` takes the last step's token. Raw model log-probs: before
    temperature and top-p, as vLLM and OpenAI report them.
    """

    def __init__(self, top: int):
        self.top = int(top)
        self.previous: Any = None
        self.chosen: list[list[float]] = []
        self.tops: list[tuple[list[list[float]], list[list[int]]]] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.previous is not None:
            self.finish(input_ids[:, -1])
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        if self.top:
            values, ids = torch.topk(self.previous, min(self.top, self.previous.shape[-1]))
            self.tops.append((values.tolist(), ids.tolist()))
        return scores

    def finish(self, tokens: Any) -> None:
        if self.previous is not None:
            self.chosen.append(self.previous.gather(1, tokens[:, None].to(self.previous.device)).squeeze(1).tolist())
            self.previous = None


class TransformersGenerator:
    name = "transformers"

    def __init__(self, model: dict, *, batch_size: int = 16, device: Optional[str] = None, dtype: Optional[str] = None,
                 cache: bool = True, progress: Optional[bool] = None):
        if model.get("type") != "Model":
            raise EngineError(f"the transformers generator needs a model with weights, got {model.get('type')}")
        self.artifact = model
        self.fingerprint = model.get("fingerprint")
        self.batch_size = max(1, int(batch_size))
        self.device = _device(device)
        self.tokenizer = load_tokenizer(model)
        self.model = load_causal_lm(model, self.device, dtype)
        self.eos_ids = self._eos_ids()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        from engine.models.resolve import base_of

        self.default_kwargs = dict((base_of(model).get("source") or {}).get("chat_template_kwargs") or {})
        self.cache = cache_for(self.name, self.fingerprint) if cache else None
        self.progress = progress
        self.counts = Counts()
        self._static_ok = True

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        if not ids:
            raise EngineError(f"model {self.artifact.get('path')} has no end-of-sequence token; set eos_token in its tokenizer")
        return ids

    # --- prompts -------------------------------------------------------------------------------------

    def render(self, prompt: Prompt, chat_template_kwargs: Optional[dict] = None) -> str:
        if isinstance(prompt, str):
            return prompt
        if not self.tokenizer.chat_template:
            raise EngineError(f"model {self.artifact.get('path')} has no chat template; set `chat_template:` on the model "
                              f"or give raw-text prompts")
        kwargs = {**self.default_kwargs, **(chat_template_kwargs or {})}
        return self.tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True, **kwargs)

    def _encode(self, text: str, chat: bool) -> list[int]:
        # a chat-template rendering already holds its special tokens (BOS included); raw text gets them added
        return self.tokenizer(text, add_special_tokens=not chat)["input_ids"]

    def _pad(self, rows: list[list[int]]):
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r):] = 1
        return ids.to(self.device), mask.to(self.device)

    # --- generate ------------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        results: list[Optional[GenerationResult]] = [None] * len(requests)
        todo: dict[str, list[int]] = {}          # identical (prompt, settings) -> the indices that share it
        prepared: dict[str, tuple[GenerationRequest, str, list[int]]] = {}
        for i, request in enumerate(requests):
            try:
                text = self.render(request.prompt, request.chat_template_kwargs)
            except Exception as err:  # noqa: BLE001 - a prompt that cannot be rendered fails alone
                results[i] = failed(request, f"render: {err}")
                continue
            hit = self.cache.get(request, text) if self.cache else None
            if hit is not None:
                results[i] = hit
                continue
            key = settings_key(request, text)
            if key not in prepared:
                prepared[key] = (request, text, self._encode(text, not isinstance(request.prompt, str)))
            todo.setdefault(key, []).append(i)
        groups: dict[tuple, list[str]] = {}
        for key, (request, _, _) in prepared.items():
            groups.setdefault(self._group(request), []).append(key)
        with GenerationProgress(len(requests), f"generate ({self.name})", self.progress) as bar:
            bar.advance(sum(r is not None for r in results))
            for keys in groups.values():
                keys.sort(key=lambda k: -len(prepared[k][2]))
                for start in range(0, len(keys), self.batch_size):
                    chunk = keys[start:start + self.batch_size]
                    outs = self._batch_or_each([prepared[k] for k in chunk])
                    for key, out in zip(chunk, outs):
                        request, text, _ = prepared[key]
                        if self.cache:
                            self.cache.put(request, text, out)
                        for i in todo[key]:
                            results[i] = _with_id(out, requests[i].id)
                        bar.advance(len(todo[key]), out.completion_tokens * len(todo[key]))
        for r in results:
            self.counts.add(r)
        return results  # type: ignore[return-value]

    @staticmethod
    def _group(r: GenerationRequest) -> tuple:
        sampled = r.temperature > 0
        return (r.n if sampled else 1, r.temperature, r.top_p if sampled else 1.0, r.max_new_tokens, r.stop, r.logprobs)

    def _batch_or_each(self, batch: list[tuple[GenerationRequest, str, list[int]]]) -> list[GenerationResult]:
        try:
            return self._run(batch)
        except Exception as err:  # noqa: BLE001 - retry one by one so one bad prompt fails alone
            if len(batch) == 1:
                return [failed(batch[0][0], f"generate: {type(err).__name__}: {err}")]
            return [self._batch_or_each([item])[0] for item in batch]

    def _run(self, batch: list[tuple[GenerationRequest, str, list[int]]]) -> list[GenerationResult]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        first = batch[0][0]
        sampled = first.temperature > 0
        copies = first.n if sampled else 1
        seeds = [sample_seed(request.seed, request.id, j) for request, _, _ in batch for j in range(copies)]
        input_ids, mask = self._pad([ids for _, _, ids in batch])
        cache = self._kv_cache(input_ids, mask, copies, first.max_new_tokens)
        if copies > 1:  # the n sample rows of each prompt (what num_return_sequences does)
            input_ids, mask = input_ids.repeat_interleave(copies, 0), mask.repeat_interleave(copies, 0)
        config = GenerationConfig(
            max_new_tokens=first.max_new_tokens, do_sample=False, num_beams=1, pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids, repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
            return_dict_in_generate=True)
        stopping = StoppingCriteriaList([StopStrings(self.tokenizer, first.stop, input_ids.shape[1])] if first.stop else [])

        def run(cache: Any) -> tuple[Any, Optional[LogprobRecorder]]:
            recorder = LogprobRecorder(first.logprobs) if first.logprobs is not None else None
            processors = LogitsProcessorList(([recorder] if recorder else []) + (
                [SeededSampling(first.temperature, first.top_p, seeds, self.device)] if sampled else []))
            with torch.inference_mode():
                out = self.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config,
                                          logits_processor=processors, stopping_criteria=stopping,
                                          **({"past_key_values": cache} if cache is not None else {}))
            if recorder is not None:
                recorder.finish(out.sequences[:, -1])
            return out, recorder

        try:
            out, recorder = run(cache)
        except Exception:  # noqa: BLE001 - a model that cannot generate with a static cache: the default one
            if cache is None:
                raise
            self._static_ok = False
            out, recorder = run(None)
        generated = out.sequences[:, input_ids.shape[1]:].tolist()
        results = []
        for b, (request, _, ids) in enumerate(batch):
            texts, reasons, lps, used = [], [], [], 0
            for j in range(copies):
                row = b * copies + j
                text, reason, tokens = self._decode(generated[row], request)
                texts.append(text)
                reasons.append(reason)
                used += len(tokens)
                if recorder is not None:
                    lps.append(self._token_logprobs(recorder, row, tokens))
            if copies < request.n:
                texts, reasons, lps = texts * request.n, reasons * request.n, lps * request.n
                used *= request.n
            results.append(GenerationResult(id=request.id, texts=texts, finish_reasons=reasons,
                                            logprobs=lps if recorder is not None else None,
                                            prompt_tokens=len(ids), completion_tokens=used))
        return results

    def _kv_cache(self, input_ids: Any, mask: Any, copies: int, max_new_tokens: int) -> Any:
        """A preallocated (static) KV cache for the batch, with the prompts already encoded once when n > 1.

        A static cache avoids growing every layer's keys/values with `torch.cat` at each step (most of the decode
        time on CPU in a profile); with n samples per prompt, the prompts (all but their last token) are encoded
        once and the cache rows repeated n times, so only decoding runs per sample (prefix sharing). None (the
        default dynamic cache) where the model's cache layers are not plain static layers.
        """
        import torch

        if not self._static_ok:
            return None
        try:
            from transformers import StaticCache
            from transformers.cache_utils import StaticLayer

            cache = StaticCache(config=self.model.config, max_cache_len=input_ids.shape[1] + max_new_tokens)
            if any(type(layer) is not StaticLayer for layer in cache.layers):
                self._static_ok = False
                return None
            if copies < 2 or input_ids.shape[1] < 2:
                return cache
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                self.model(input_ids=input_ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                           past_key_values=cache, use_cache=True)
            for layer in cache.layers:
                layer.keys = layer.keys.repeat_interleave(copies, 0)
                layer.values = layer.values.repeat_interleave(copies, 0)
                layer.batch_size *= copies
            return cache
        except Exception:  # noqa: BLE001 - an architecture without static-cache support: use the dynamic cache
            self._static_ok = False
            return None

    def _decode(self, tokens: list[int], request: GenerationRequest) -> tuple[str, str, list[int]]:
        """(text, finish reason, the tokens the text came from: up to a final eos or through the stop string)."""
        eos = set(self.eos_ids)
        cut = next((k for k, t in enumerate(tokens) if t in eos), None)
        kept = tokens[:cut] if cut is not None else list(tokens)
        if cut is None:
            while kept and kept[-1] == self.pad_id:
                kept.pop()  # a row that a stop string ended is padded to the batch's length
        full = self.tokenizer.decode(kept, skip_special_tokens=True)
        text, hit_stop = trim_at_stop(full, request.stop)
        if hit_stop:
            kept = kept[:self._tokens_through_stop(kept, request.stop)]
        elif cut is not None:
            kept = kept + [tokens[cut]]
        stopped = cut is not None or hit_stop or len(kept) < request.max_new_tokens
        return text, "stop" if stopped else "length", kept

    def _tokens_through_stop(self, tokens: list[int], stop: Sequence[str]) -> int:
        """The fewest leading tokens whose text contains a stop string (binary search; the property is monotone)."""
        lo, hi = 1, len(tokens)
        while lo < hi:
            mid = (lo + hi) // 2
            if trim_at_stop(self.tokenizer.decode(tokens[:mid], skip_special_tokens=True), stop)[1]:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _token_logprobs(self, recorder: "LogprobRecorder", row: int, tokens: list[int]) -> list[dict]:
        out = []
        for step, token in enumerate(tokens):
            entry = {"token": self.tokenizer.decode([token]), "id": token, "logprob": recorder.chosen[step][row]}
            if recorder.top:
                values, ids = recorder.tops[step]
                entry["top"] = [{"token": self.tokenizer.decode([i]), "id": i, "logprob": v}
                                for v, i in zip(values[row], ids[row])]
            out.append(entry)
        return out

    # --- judgment probabilities ----------------------------------------------------------------------

    def logprobs_for(self, prompts: Sequence[Prompt], candidates: Sequence[str],
                     chat_template_kwargs: Optional[dict] = None) -> list[dict[str, Optional[float]]]:
        """log P(candidate | prompt) for each prompt and candidate answer, from one forward pass per batch.

        Candidates that are single tokens (the usual "yes" / "no") are read off the next-token distribution of
        one pass over the prompts; multi-token candidates are scored exactly by teacher forcing prompt+candidate
        rows, also in one batched pass. Natural log; pool variants (" Yes", "yes") with
        `engine.score.judgment.p_yes_from_logprobs`.
        """
        import torch

        texts = [self.render(p, chat_template_kwargs) for p in prompts]
        encoded = [self._encode(t, not isinstance(p, str)) for t, p in zip(texts, prompts)]
        cand_ids = {c: self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in candidates}
        empty = [c for c, ids in cand_ids.items() if not ids]
        if empty:
            raise EngineError(f"judgment candidates {empty} encode to no tokens")
        out: list[dict[str, Optional[float]]] = []
        single = all(len(ids) == 1 for ids in cand_ids.values())
        with torch.inference_mode():
            for start in range(0, len(encoded), self.batch_size):
                chunk = encoded[start:start + self.batch_size]
                if single:
                    lp = self._forward(chunk)[:, -1]
                    out.extend({c: float(lp[i, ids[0]]) for c, ids in cand_ids.items()} for i in range(len(chunk)))
                    continue
                rows = [ids + cand_ids[c] for ids in chunk for c in candidates]
                lp = self._forward(rows)
                k = 0
                for _ in chunk:
                    scores: dict[str, Optional[float]] = {}
                    for c in candidates:
                        m = len(cand_ids[c])
                        positions = range(lp.shape[1] - m - 1, lp.shape[1] - 1)
                        scores[c] = float(sum(lp[k, p, t] for p, t in zip(positions, cand_ids[c])))
                        k += 1
                    out.append(scores)
        return out

    def _forward(self, rows: list[list[int]]):
        import torch

        ids, mask = self._pad(rows)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        return torch.log_softmax(logits.float(), dim=-1)

    def close(self) -> None:
        self.model = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass


def _with_id(result: GenerationResult, request_id: str) -> GenerationResult:
    if result.id == request_id:
        return result
    return GenerationResult(**{**result.__dict__, "id": request_id})


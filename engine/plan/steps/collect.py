"""The `collect` step executor: render each row through the template, draw `n` answers per row in one request.

Output `steps/<id>/<save or samples.jsonl>`: one line per input row (after `limit`), in input order: the row's
own fields plus `samples` (n texts, None for a failed request), `finish_reasons` ("stop", "length", "error")
and `errors` (per sample: None, or why the request failed). `collect.json` summarises the run (rows, failures
by reason, tokens, throughput, generator, settings).

Resumable: rows are appended (one fsynced line each) in input order, a window of rows at a time, so after a
crash or kill -9 a re-run skips the rows already written and continues at the first unfinished one — no
duplicates, nothing lost. Sampling seeds derive from (seed, row id, sample index) and finished generations are
in the generation cache, so the resumed file is identical to an uninterrupted one. A `.meta.json` next to the
output records the input and settings; a file written under different ones is started over.

`workers: N` runs N data-parallel processes (spawned, each with its own copy of the model; on a multi-GPU
machine worker k sees GPU k); each window is split among them and merged back in input order.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Optional

from engine.data.fingerprints import fingerprint_text, sha256_file
from engine.generate.base import Counts, GenerationRequest, GenerationResult
from engine.generate.progress import GenerationProgress
from engine.models.resolve import as_model_artifact
from engine.plan.context import StepContext
from engine.recipe.errors import EngineError
from engine.runs.atomic import append_jsonl, atomic_write_json, dump_json, read_json, read_jsonl

GENERATION_FIELDS = ("n", "temperature", "top_p", "max_new_tokens", "stop", "seed", "chat_template_kwargs")


def load_step_template(spec: Any, recipe_dir: Path):
    """The step's `template:`: a shipped name, a .yaml path (relative to the recipe), or an inline mapping."""
    from engine.data.templates import load_template

    if isinstance(spec, str) and spec.endswith((".yaml", ".yml")) and not Path(spec).is_absolute():
        spec = str(Path(recipe_dir) / spec)
    return load_template(spec)


def build_requests(rows: list[dict], template: Any, settings: dict) -> list[GenerationRequest]:
    """One request per row: the template's chat messages (without target), all n samples in it."""
    from engine.data.templates import TemplateRenderError, render

    requests = []
    for index, row in enumerate(rows):
        try:
            messages = render(template, row, with_target=False).messages
        except TemplateRenderError as err:
            raise EngineError(f"row {index} (id {row.get('id')!r}): {err}") from None
        requests.append(GenerationRequest(
            id=str(row.get("id", index)), prompt=messages, n=settings["n"], temperature=settings["temperature"],
            top_p=settings["top_p"], max_new_tokens=settings["max_new_tokens"], stop=tuple(settings["stop"]),
            seed=settings["seed"], chat_template_kwargs=settings["chat_template_kwargs"] or None))
    return requests


def sample_row(row: dict, result: GenerationResult) -> dict:
    return {**row, "samples": result.texts, "finish_reasons": result.finish_reasons,
            "errors": [result.error] * len(result.texts) if result.error else [None] * len(result.texts)}


def run(ctx: StepContext) -> dict[str, dict]:
    model_value = ctx.param("model") or ctx.plan.get("model")
    if model_value is None:
        raise EngineError(f"step {ctx.step_id}: no model to generate with (set `model:` on the step or the recipe)")
    model = as_model_artifact(model_value, ctx.recipe_dir)
    data = ctx.param("data")
    if not isinstance(data, dict) or not data.get("path"):
        raise EngineError(f"step {ctx.step_id}: `data` must be a dataset (e.g. ${{data.train}}), got {data!r}")
    template = load_step_template(ctx.param("template"), ctx.recipe_dir)
    rows = read_jsonl(data["path"])
    limit = ctx.param("limit")
    rows = rows[:limit] if limit else rows
    settings = {name: ctx.param(name) for name in GENERATION_FIELDS}
    settings.update(n=int(settings["n"] or 1), temperature=float(0.7 if settings["temperature"] is None else settings["temperature"]),
                    top_p=float(settings["top_p"] or 1.0), max_new_tokens=int(settings["max_new_tokens"] or 256),
                    stop=list(settings["stop"] or []), seed=ctx.seed if settings["seed"] is None else int(settings["seed"]),
                    chat_template_kwargs=dict(settings["chat_template_kwargs"] or {}))
    out_path = ctx.step_dir / (ctx.save_name or "samples.jsonl")
    options = {"generator": ctx.param("generator") or "auto", "batch_size": int(ctx.param("batch_size") or 16)}
    summary = collect(model, rows, template, settings, out_path, options=options, workers=int(ctx.param("workers") or 1),
                      recipe_dir=ctx.recipe_dir, resources=ctx.resources, input_fingerprint=data.get("fingerprint"),
                      emit=ctx.emit)
    atomic_write_json(ctx.step_dir / "collect.json", summary)
    return {"samples": {"type": "Samples", "path": str(out_path), "rows": len(rows), "fingerprint": sha256_file(out_path)}}


def collect(model: dict, rows: list[dict], template: Any, settings: dict, out_path: Path, *, options: dict,
            workers: int = 1, recipe_dir: Path | str = ".", resources: Optional[dict] = None,
            input_fingerprint: Optional[str] = None, emit: Any = None) -> dict:
    """Generate for `rows` into `out_path` (resuming it); returns the summary (see the module docstring)."""
    from engine.generate.engines import engine_name, open_generator

    emit = emit or (lambda *a, **k: None)
    requests = build_requests(rows, template, settings)
    engine = engine_name(model, options["generator"])
    meta = {"input": input_fingerprint or fingerprint_text(dump_json([r.id for r in requests])), "rows": len(rows),
            "template": template.digest(), "settings": settings, "model": model.get("fingerprint") or model.get("url"),
            "generator": engine}
    done = _resume(out_path, meta, rows)
    if done:
        emit("collect_resumed", rows_done=done, rows=len(rows))
    workers = 1 if engine == "endpoint" else max(1, workers)
    if engine == "endpoint":  # enough requests in flight to keep the endpoint's concurrency busy
        window = max(int((model.get("source") or {}).get("concurrency") or 8) * 8, 64)
    else:
        window = max(options["batch_size"] * workers * 4, 32)
    counts, started = Counts(), time.perf_counter()
    pool = _WorkerPool(model, engine, options, workers, recipe_dir) if workers > 1 and done < len(rows) else None
    generator = None
    try:
        if pool is None and done < len(rows):
            generator = open_generator(model, generator=engine, recipe_dir=recipe_dir, resources=resources,
                                       batch_size=options["batch_size"], progress=False)
        with GenerationProgress(len(rows) - done, f"collect ({engine})") as bar:
            for start in range(done, len(rows), window):
                chunk = requests[start:start + window]
                results = pool.generate(chunk) if pool is not None else generator.generate(chunk)
                for i, result in enumerate(results):
                    counts.add(result)
                    append_jsonl(out_path, sample_row(rows[start + i], result))
                bar.advance(len(chunk), sum(r.completion_tokens for r in results))
                emit("collect_progress", rows_done=start + len(chunk), rows=len(rows), failed=counts.failed)
    finally:
        if pool is not None:
            pool.close()
        if generator is not None and resources is None:
            generator.close()
    if not out_path.exists():
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.touch()
    elapsed = time.perf_counter() - started
    written = read_jsonl(out_path)
    failed = sum(1 for r in written if any(e is not None for e in r.get("errors") or []))
    if len(written) != len(rows):
        raise EngineError(f"{out_path}: {len(written)} rows written for {len(rows)} inputs; delete it and run again")
    summary = {"rows": len(rows), "resumed_at": done, "failed_requests": failed, "failure_reasons": counts.reasons,
               "generator": engine, "model": model.get("path") or model.get("url"), "settings": settings,
               "workers": workers, "generated_this_run": counts.requests, "cached": counts.cached,
               "completion_tokens": counts.completion_tokens, "seconds": round(elapsed, 3),
               "tokens_per_second": round(counts.completion_tokens / elapsed, 2) if elapsed > 0 else None}
    emit("collect_done", rows=len(rows), failed=failed, generated=counts.requests)
    return summary


def _resume(out_path: Path, meta: dict, rows: list[dict]) -> int:
    """How many rows `out_path` already holds for this input and these settings (0: start over)."""
    meta_path = out_path.with_name(out_path.name + ".meta.json")
    if out_path.exists() and meta_path.exists():
        try:
            same = read_json(meta_path) == _jsonable(meta)
        except EngineError:
            same = False
        if same:
            written = read_jsonl(out_path)
            if len(written) <= len(rows) and all(w.get("id") == r.get("id") for w, r in zip(written, rows)):
                return len(written)
    if out_path.exists():
        out_path.unlink()
    atomic_write_json(meta_path, meta)
    return 0


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(dump_json(obj))


# ------------------------------------------------------------------------------------ data-parallel workers

_WORKER: dict[str, Any] = {}


def _init_worker(model: dict, engine: str, options: dict, recipe_dir: str, slots: Any, threads: int) -> None:
    slot = slots.get()
    if os.environ.get("CUDA_VISIBLE_DEVICES") is None and engine != "endpoint":
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot)  # GPU k for worker k (harmless without GPUs)
    import torch

    torch.set_num_threads(max(1, threads))
    from engine.generate.engines import open_generator

    _WORKER["generator"] = open_generator(model, generator=engine, recipe_dir=recipe_dir,
                                          batch_size=options["batch_size"], progress=False)


def _worker_generate(requests: list[GenerationRequest]) -> list[GenerationResult]:
    return _WORKER["generator"].generate(requests)


class _WorkerPool:
    """N spawned processes, each holding a loaded generator; a list of requests is split and merged in order."""

    def __init__(self, model: dict, engine: str, options: dict, workers: int, recipe_dir: Path | str):
        context = multiprocessing.get_context("spawn")
        slots = context.Queue()
        for k in range(workers):
            slots.put(k)
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.workers = workers
        self.executor = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                            initargs=(model, engine, options, str(recipe_dir), slots, threads))

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        size = -(-len(requests) // self.workers)
        parts = [requests[i:i + size] for i in range(0, len(requests), size)]
        futures = [self.executor.submit(_worker_generate, part) for part in parts]
        out: list[GenerationResult] = []
        for future in futures:
            out.extend(future.result())
        return out

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

"""Shared fixtures: tiny models built once per test session (other test modules reuse them by name).

`tiny_qwen2_dir`   a Qwen2 causal LM (hidden 64, 2 layers, 4 heads, BPE vocab 512, ChatML chat template)
`tiny_deberta_dir` a DeBERTa-v2 sequence classifier (2 labels) with a [CLS]/[SEP] BPE tokenizer
Both are plain HF directories (`source: local` in a recipe). `engine_cache` points RECIPE_ENGINE_CACHE at a
session temp dir, so `source: tiny` models and conversions never touch the user's cache.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory):
    from engine.paths import cache_dir

    # side environments built in the real cache (`recipe env create ...`) stay reachable through their override
    for name, var in (("axolotl", "RECIPE_ENGINE_AXOLOTL_PYTHON"), ("vllm", "RECIPE_ENGINE_VLLM_PYTHON")):
        python = cache_dir() / "envs" / name / "bin" / "python"
        if var not in os.environ and python.is_file():
            os.environ[var] = str(python)
    path = tmp_path_factory.mktemp("engine_cache")
    old = os.environ.get("RECIPE_ENGINE_CACHE")
    os.environ["RECIPE_ENGINE_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("RECIPE_ENGINE_CACHE", None)
    else:
        os.environ["RECIPE_ENGINE_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory):
    from engine.models.tiny import build_tiny

    return build_tiny({"arch": "qwen2", "seed": 0}, tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="session")
def tiny_deberta_dir(tmp_path_factory):
    from engine.models.tiny import build_tiny

    return build_tiny({"arch": "deberta-v2", "seed": 0, "num_labels": 2}, tmp_path_factory.mktemp("tiny_deberta"))

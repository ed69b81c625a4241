"""Model sources: a discriminated union on `source`."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, field_validator

from engine.recipe.models.base import Block
from engine.recipe.models.common import Ref


class _ModelCommon(Block):
    name: Optional[str] = Field(None, description="A short display name used in run names and reports (e.g. `qwen25-7b`).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights dtype when loading.")
    chat_template: Optional[str] = Field(None, description="A chat template (Jinja text) overriding the tokenizer's own.")
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra chat-template variables, e.g. `{enable_thinking: false}` for Qwen3."
    )


class HubModel(_ModelCommon):
    """A model from the Hugging Face hub, pinned by revision."""

    source: Literal["hub"]
    path: str = Field(description="Hub id, e.g. `Qwen/Qwen2.5-7B-Instruct`.")
    revision: Optional[str] = Field(None, description="Commit, tag or branch; recorded in the lock.")
    tokenizer: Optional[str] = Field(None, description="A different hub id or dir for the tokenizer.")
    trust_remote_code: bool = Field(False, description="Run the model repository's own Python code (listed by `recipe validate`).")


class LocalModel(_ModelCommon):
    """A Hugging Face-format model directory on disk."""

    source: Literal["local"]
    path: str = Field(description="Directory with config.json and weights (relative paths are relative to the recipe file).")
    tokenizer: Optional[str] = Field(None, description="A different directory for the tokenizer.")
    trust_remote_code: bool = Field(False, description="Run the model directory's own Python code (listed by `recipe validate`).")


class GGUFModel(_ModelCommon):
    """A GGUF file (or `package:DIST/FILE` inside an installed package), converted once to an HF dir in the cache."""

    source: Literal["gguf"]
    file: str = Field(description="Path to a .gguf file, or `package:DIST/FILE` for a file shipped inside an installed package.")
    tokenizer: Optional[str] = Field(None, description="Tokenizer dir or hub id when the GGUF's own is not wanted.")


class RunModel(_ModelCommon):
    """A model produced by an earlier run (or one of its stages)."""

    source: Literal["run"]
    run: str = Field(description="The run directory.")
    output: str = Field("model", description="Which output: `model` (the recipe's `outputs.model`) or `steps.NAME.model`.")


class TinyModel(_ModelCommon):
    """A small randomly initialised model built locally (for smoke profiles and tests); deterministic by seed."""

    source: Literal["tiny"]
    arch: Literal["qwen2", "llama", "deberta-v2"] = Field("qwen2", description="Architecture.")
    seed: int = Field(0, description="Initialisation seed.")
    hidden_size: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    kv_heads: Optional[int] = Field(None, ge=1)
    intermediate_size: Optional[int] = Field(None, ge=8)
    vocab_size: int = Field(512, ge=64, description="BPE vocabulary trained on `corpus` (or a built-in text).")
    corpus: Optional[str] = Field(None, description="A text/JSONL file whose text trains the tokenizer.")
    num_labels: int = Field(2, ge=1, description="Classes, for sequence-classification architectures.")


class RequestMapping(Block):
    """How to call a custom chat API (e.g. `POST /chat`) and where the reply text is."""

    method: Literal["POST", "GET"] = "POST"
    path: str = Field("/chat", description="Appended to the endpoint url.")
    body: dict[str, Any] = Field(
        default_factory=lambda: {"message": "{{ prompt }}"},
        description="JSON body; string values are Jinja templates over `prompt`, `messages`, `model`, `system`.",
    )
    response_field: str = Field("response", description="Dotted path of the reply text in the JSON answer.")


class EndpointModel(Block):
    """An HTTP model endpoint: OpenAI-compatible, or a custom chat API with a request/response mapping."""

    source: Literal["endpoint"]
    url: str = Field(description="Base URL, e.g. `http://localhost:8000/v1` or `http://localhost:8000`.")
    api: Literal["openai", "custom"] = Field("openai", description="`openai`: /chat/completions; `custom`: see `request`.")
    model: Optional[str] = Field(None, description="Model name sent to the API.")
    name: Optional[str] = Field(None, description="Display name in reports (e.g. `qwen3:8b-baseline`).")
    api_key: Optional[str] = Field(None, description="Must be `${env:NAME}`: keys are read from the environment only.")
    headers: dict[str, str] = Field(default_factory=dict)
    request: Optional[RequestMapping] = None
    concurrency: int = Field(8, ge=1)
    timeout: float = Field(120.0, gt=0)
    retries: int = Field(4, ge=0)

    @field_validator("api_key")
    @classmethod
    def _key_from_env(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not (value.startswith("${env:") and value.endswith("}")):
            raise ValueError("an API key must be written as ${env:NAME} — keys are never stored in recipes; "
                             "export it and write e.g. api_key: ${env:OPENAI_API_KEY}")
        return value


TrainableModel = Annotated[
    Union[HubModel, LocalModel, GGUFModel, RunModel, TinyModel], Field(discriminator="source")
]
AnyModel = Annotated[
    Union[HubModel, LocalModel, GGUFModel, RunModel, TinyModel, EndpointModel], Field(discriminator="source")
]
ModelSpec = Union[Ref, AnyModel]
MODEL_SOURCES = ("hub", "local", "gguf", "run", "tiny", "endpoint")

"""`source: hub`: a Hugging Face hub model downloaded with `snapshot_download`, pinned by `revision`.

The artifact's path is the snapshot directory in the hub cache; its fingerprint is the resolved commit, so a
branch or tag recorded in the lock still says which weights were used.
"""

from __future__ import annotations

from pathlib import Path

from engine.models.resolve import model_artifact
from engine.recipe.errors import EngineError

# Weight formats other frameworks use: never needed by transformers/PEFT/TRL.
IGNORE_PATTERNS = ["*.msgpack", "*.h5", "*.ot", "*.onnx", "*.onnx_data", "*.tflite", "*.gguf", "original/*", "coreml/*"]


def resolve(source: dict, recipe_dir: Path) -> dict:
    """Download (or find in the hub cache) `source.path` at `source.revision`."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    repo, revision = source["path"], source.get("revision")
    at = f"{repo}" + (f"@{revision}" if revision else "")
    try:
        path = Path(snapshot_download(repo_id=repo, revision=revision, ignore_patterns=IGNORE_PATTERNS))
    except LocalEntryNotFoundError:
        raise EngineError(
            f"model {at} is not in the local hub cache and the hub cannot be reached (offline, or HF_HUB_OFFLINE=1); "
            f"download it where the hub is reachable (`huggingface-cli download {repo}`), or point the recipe at a "
            f"directory with `source: local, path: DIR`") from None
    except RevisionNotFoundError:
        raise EngineError(f"model {repo} has no revision {revision!r}; give a commit, tag or branch that exists") from None
    except GatedRepoError:
        raise EngineError(f"model {repo} is gated: accept its licence on the hub and log in (`huggingface-cli login`), "
                          f"or use `source: local` with a downloaded copy") from None
    except RepositoryNotFoundError:
        raise EngineError(f"model {repo} was not found on the hub (or is private); check the id, or use "
                          f"`source: local, path: DIR`") from None
    except OSError as exc:  # connection errors and the like
        raise EngineError(f"cannot download model {at}: {exc}; retry, or use `source: local, path: DIR`") from None
    commit = path.name
    return model_artifact(path, source=source, fingerprint=f"hub:{repo}@{commit}", revision=commit)

"""The base of every recipe block: unknown keys are errors, never ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Block(BaseModel):
    """One block of a recipe. `extra="forbid"`: a typo is an error with did-you-mean, not a silent default."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=False, frozen=False)

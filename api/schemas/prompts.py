"""Prompt request and response bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ALLOWED_SIZES = (512, 576, 640, 704, 768, 832, 896, 960, 1024, 1152, 1280, 1344, 1440)


class PromptCreate(BaseModel):
    """Generate 1 or 4 images from a text prompt with a ready model."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=500, description="1-500 characters")
    negative_prompt: str | None = Field(default=None, max_length=500)
    amount_images: Literal[1, 4]
    # Numbers are strict: `true` is not 1 image and `"512"` is not a size; coercing hides client bugs.
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1, strict=True)
    width: int | None = Field(
        default=None, strict=True, description=f"One of {ALLOWED_SIZES}; give height too"
    )
    height: int | None = Field(
        default=None, strict=True, description=f"One of {ALLOWED_SIZES}; give width too"
    )
    guidance_scale: float | None = Field(default=None, ge=0, le=20)
    num_inference_steps: int | None = Field(default=None, ge=1, le=50, strict=True)

    @field_validator("prompt", mode="before")
    @classmethod
    def strip_prompt(cls, value: object) -> object:
        """Surrounding whitespace does not count."""
        return value.strip() if isinstance(value, str) else value

    @field_validator("negative_prompt", mode="before")
    @classmethod
    def strip_negative(cls, value: object) -> object:
        """An empty negative prompt means none."""
        return (value.strip() or None) if isinstance(value, str) else value

    @field_validator("amount_images", mode="before")
    @classmethod
    def not_a_bool(cls, value: object) -> object:
        """`true` equals 1 to Python; it is still not a number of images."""
        if isinstance(value, bool):
            raise ValueError("must be 1 or 4")
        return value

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def no_nul(cls, value: str | None) -> str | None:
        """NUL cannot be stored as text (Postgres refuses it) and never belongs in a prompt."""
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @field_validator("width", "height")
    @classmethod
    def allowed_size(cls, value: int | None) -> int | None:
        """Sizes the model supports."""
        if value is not None and value not in ALLOWED_SIZES:
            raise ValueError(f"must be one of {', '.join(map(str, ALLOWED_SIZES))}")
        return value

    @model_validator(mode="after")
    def both_sides(self) -> Self:
        """Width and height go together."""
        if (self.width is None) != (self.height is None):
            raise ValueError("give both width and height, or neither")
        return self


class PromptCreated(BaseModel):
    """The generated images."""

    code: int = 201
    prompt_id: uuid.UUID
    images: list[str]
    images_left: int
    prompt_text: str
    prompt_negative: str | None


class PromptAccepted(BaseModel):
    """Still generating: the result will appear in the list and at GET /api/v1/prompts/{prompt_id}."""

    code: int = 202
    prompt_id: uuid.UUID
    message: str = "Your images are still being generated; they will appear in the list shortly"


class ImagePublic(BaseModel):
    """One generated image."""

    url: str
    cdn_url: str = Field(description="Same as url (the first version of the API's name)")
    width: int
    height: int
    is_upscaled: bool = False
    created_at: datetime


class PromptPublic(BaseModel):
    """A prompt with its status and images."""

    id: uuid.UUID
    prompt: str
    negative_prompt: str | None
    num_outputs: int
    status: Literal["running", "succeeded", "failed"]
    error: str | None
    width: int
    height: int
    seed: int | None
    created_at: datetime
    finished_at: datetime | None
    images: list[ImagePublic]


class PromptOne(PromptPublic):
    """GET one prompt."""

    code: int = 200


class PromptsPublic(BaseModel):
    """A page of a model's prompts, newest first."""

    code: int = 200
    prompts: list[PromptPublic]
    next_cursor: str | None

"""The event schema the browser tests send from the UI's form."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Job(BaseModel):
    """A job to run."""

    key: int = Field(ge=0)
    name: str = Field(min_length=1)

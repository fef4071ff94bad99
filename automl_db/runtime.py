"""Helpers the generated modules use: the Row base class, JSON parameters, scalar rows."""

from typing import Any

from psycopg.rows import scalar_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

__all__ = ["Row", "jsonb", "scalar_row"]


class Row(BaseModel):
    """Base of the generated row models: immutable pydantic models, validated when read."""

    model_config = ConfigDict(frozen=True)


def jsonb(value: Any) -> Jsonb | None:
    """A JSON parameter: pydantic models are dumped as JSON-compatible data; None stays SQL NULL."""
    if value is None:
        return None
    if isinstance(value, BaseModel):
        return Jsonb(value.model_dump(mode="json", exclude_none=True))
    return Jsonb(value)

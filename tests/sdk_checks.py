"""Strict validation of replies against the official SDK's pydantic types."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def strict(model: type[M], data: Any) -> M:
    """Validate ``data`` strictly and insist that no field is undeclared anywhere."""
    parsed = model.model_validate(data, strict=True)
    assert_no_extra(parsed)
    return parsed


def assert_no_extra(value: Any, path: str = "$") -> None:
    if isinstance(value, BaseModel):
        extra = value.model_extra or {}
        assert not extra, f"undeclared fields at {path}: {sorted(extra)}"
        for name in type(value).model_fields:
            assert_no_extra(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            assert_no_extra(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            assert_no_extra(item, f"{path}.{key}")

"""The pydantic base every API model shares: camelCase names on the wire, unknown fields refused."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class FieldError(ValueError):
    """Raised by a model validator about one of its fields, so the error names the full path."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
        use_attribute_docstrings=False,
    )

    def to_api(self) -> dict[str, Any]:
        """The wire form, as the API server stores it: camelCase keys, no nulls, no empty lists or maps
        (``omitempty``), but every sub-object, whose defaults the server fills in too."""
        return _omit_empty(self, self.model_dump(mode="json", by_alias=True, exclude_none=True))


def _omit_empty(model: BaseModel, data: dict[str, Any]) -> dict[str, Any]:
    for name, field in type(model).model_fields.items():
        key = field.alias or name
        if key not in data:
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            _omit_empty(value, data[key])
        elif isinstance(value, list | dict) and not value:
            del data[key]
        elif isinstance(value, list):
            for item, dumped in zip(value, data[key], strict=True):
                if isinstance(item, BaseModel):
                    _omit_empty(item, dumped)
    return data

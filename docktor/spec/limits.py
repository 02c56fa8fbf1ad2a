"""The limits of a user's file (docktor.spec.primitives.Limit), checked on the data as the file
wrote it: every value past its limit is reported with the file's other problems, whatever else is
wrong around it."""

from __future__ import annotations

from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel

from docktor.spec.errors import at
from docktor.spec.primitives import Limit
from docktor.spec.schema import inner_model


def limit_problems(model: type[BaseModel], data: Any, loc: tuple[Any, ...] = ()) -> list[str]:
    """One line per value of `data` (read as `model`) past its limit."""
    if not isinstance(data, dict):
        return []
    problems: list[str] = []
    for name, field in model.model_fields.items():
        if name not in data:
            continue
        value = data[name]
        where = (*loc, name)
        limit = _limit(field.metadata) or _limit_in(field.annotation)
        if limit is not None:
            if (problem := limit.problem(value)) is not None:
                problems.append(at(where, problem))
            continue
        inner = inner_model(field.annotation)
        if inner is None:
            continue
        if isinstance(value, list):
            for index, item in enumerate(value):
                problems += limit_problems(inner, item, (*where, index))
        else:
            problems += limit_problems(inner, value, where)
    return problems


def _limit(metadata: list[Any] | tuple[Any, ...]) -> Limit | None:
    return next((item for item in metadata if isinstance(item, Limit)), None)


def _limit_in(annotation: Any) -> Limit | None:
    """A limit inside the annotation (`PositiveDuration | None`)."""
    if get_origin(annotation) is Annotated:
        inner, *metadata = get_args(annotation)
        return _limit(metadata) or _limit_in(inner)
    for arg in get_args(annotation):
        if (found := _limit_in(arg)) is not None:
            return found
    return None

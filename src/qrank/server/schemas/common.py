"""Field types every protocol shares: strict JSON types, texts that are real UTF-8, documents and the text they are
ranked by.

Strict means ``"top_n": "3"`` or ``true`` is a type error naming ``top_n``, not a silent conversion.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

# hard ceilings of the schema; the configurable limits (settings.server) are checked by the door
MAX_INT = 2**31 - 1  # int32: what clients in other languages (and the OpenAPI int32 format) can hold


def _allows_null(prop: dict) -> bool:
    kinds = prop.get("type")
    return (kinds == "null" or (isinstance(kinds, list) and "null" in kinds)
            or any(_allows_null(p) for p in prop.get("anyOf", []) + prop.get("oneOf", [])))


def nullable_optionals(schema: dict, model=None) -> None:
    # the published schema says what StrictModel accepts: null for every optional field
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        if name in required or _allows_null(prop):
            continue
        meta = {k: prop.pop(k) for k in ("title", "description", "default", "examples") if k in prop}
        inner = dict(prop)
        prop.clear()
        prop.update(anyOf=[inner, {"type": "null"}], **meta)


class StrictModel(BaseModel):
    """Request bodies: strict types, unknown fields ignored (clients send protocol extras), and an explicit
    ``null`` for an optional field means its default (clients in many languages send nulls for options they
    leave unset; a null for a required field is still refused, naming it).

    >>> class Body(StrictModel):
    ...     query: str
    ...     encoding_format: str = "float"
    >>> Body.model_validate({"query": "q", "encoding_format": None}).encoding_format
    'float'
    """

    model_config = ConfigDict(strict=True, extra="ignore", json_schema_extra=nullable_optionals)

    @model_validator(mode="before")
    @classmethod
    def _null_is_the_default(cls, data):
        if not isinstance(data, dict):
            return data
        optional = _optional_keys(cls)
        return {k: v for k, v in data.items() if v is not None or k not in optional}


@functools.cache
def _optional_keys(model: type[BaseModel]) -> frozenset[str]:
    # once per request model, not per request
    keys = set()
    for name, field in model.model_fields.items():
        if not field.is_required():
            keys.update(n for n in (name, field.alias, field.validation_alias) if isinstance(n, str))
    return frozenset(keys)


class ResponseModel(BaseModel):
    model_config = ConfigDict(extra="allow")


def _utf8(value: str) -> str:
    # JSON escapes can spell lone surrogates ("\ud800"), which no tokenizer can encode
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PydanticCustomError(
            "text_encoding", "contains a lone surrogate at character {pos}; not valid Unicode", {"pos": exc.start}
        ) from None
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "must not be empty or blank")
    return value


def _whole_number(value: Any) -> Any:
    # JSON Schema counts 3.0 as an integer; strings and booleans stay type errors
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def ranked_text(document: dict, rank_fields: list[str]) -> str:
    """The text an object document is ranked by under Cohere v1's ``rank_fields``: one field's value as it is (so
    ``["text"]`` is the default), several as ``key: value`` lines in the given order (the YAML-style layout Cohere
    recommends for structured documents). A value that is not a string is written as JSON.

    >>> ranked_text({"title": "Cats", "year": 2020, "text": "..."}, ["title", "year"])
    'title: Cats\\nyear: 2020'
    >>> ranked_text({"body": "Cats purr."}, ["body"])
    'Cats purr.'
    """
    for key in rank_fields:
        if key not in document:
            raise PydanticCustomError("rank_field", "has no '{key}' field, which rank_fields names", {"key": key})

    def value(key: str) -> str:
        v = document[key]
        return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)

    if len(rank_fields) == 1:
        return value(rank_fields[0])
    return "\n".join(f"{key}: {value(key)}" for key in rank_fields)


MAX_DOCUMENT_DEPTH = 64
"""How deep an object document returned as sent may nest (the object itself is level 1)."""

_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class ObjectDocument:
    """An object document: the text it is ranked by, and the object as it was sent (held, not copied, so that the
    results can return it)."""

    text: str
    source: dict[str, Any]


def document_text(document: str | ObjectDocument) -> str:
    """The text a validated document is ranked by.

    >>> document_text("Cats purr."), document_text(ObjectDocument("Cats", {"title": "Cats", "id": 7}))
    ('Cats purr.', 'Cats')
    """
    return document if isinstance(document, str) else document.text


def _object_text(value: dict, info: ValidationInfo) -> Any:
    # Cohere v1 ranks object documents by the keys rank_fields names (a field validated before documents)
    rank_fields = (info.data or {}).get("rank_fields")
    if rank_fields:
        return ranked_text(value, rank_fields)
    if "text" not in value:
        raise PydanticCustomError("document", "an object document needs a 'text' field (or name the fields to "
                                  "rank by in rank_fields)")
    return value["text"]


def _returnable(document: dict) -> None:
    """Refuse an object document that cannot be written back as it was sent: a lone surrogate in a key or a string
    (JSON escapes can spell one, UTF-8 cannot), a number JSON cannot hold (NaN, or 1e999 read as infinity), nesting
    deeper than :data:`MAX_DOCUMENT_DEPTH`. Walked without recursion and without copying a string.

    >>> _returnable({"text": "a", "meta": {"tags": ["x", 1, 2.5, None, True]}})
    >>> _returnable({"text": "a", "meta": {"score": float("nan")}})
    Traceback (most recent call last):
    pydantic_core._pydantic_core.PydanticCustomError: cannot be returned as sent: meta.score is nan, which JSON ...
    """
    # containers only go on the stack (a scalar is checked where it lies), each with its parent and key, so that
    # the path to a fault is spelt only when there is one
    stack: list[tuple[Any, int, tuple | None]] = [(document, 1, None)]
    while stack:
        entry = stack.pop()
        container, depth, _ = entry
        if depth > MAX_DOCUMENT_DEPTH:
            raise _unreturnable(entry, None, "nests deeper than {limit} levels", limit=MAX_DOCUMENT_DEPTH)
        for key, item in container.items() if isinstance(container, dict) else enumerate(container):
            if isinstance(key, str) and (bad := _SURROGATE.search(key)) is not None:
                raise _unreturnable(entry, None, "has a key with a lone surrogate at character {pos}; not valid "
                                    "Unicode", pos=bad.start())
            if isinstance(item, str):
                if (bad := _SURROGATE.search(item)) is not None:
                    raise _unreturnable(entry, key, "contains a lone surrogate at character {pos}; not valid Unicode",
                                        pos=bad.start())
            elif isinstance(item, float):
                if not math.isfinite(item):
                    raise _unreturnable(entry, key, "is {value}, which JSON cannot hold", value=str(item))
            elif isinstance(item, (dict, list)):
                stack.append((item, depth + 1, (entry, key)))


def _unreturnable(entry: tuple, key: Any, message: str, **context: Any) -> PydanticCustomError:
    # the path from the document down to the fault: meta.tags[0]
    keys = [] if key is None else [key]
    while entry[2] is not None:
        entry, parent_key = entry[2]
        keys.append(parent_key)
    where = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in reversed(keys)).lstrip(".")
    return PydanticCustomError("document", "cannot be returned as sent: {where} " + message,
                               {"where": where or "the document", **context})


def _document(value: Any, info: ValidationInfo) -> str | ObjectDocument:
    """A string document as it is; an object one as an :class:`ObjectDocument` (its text, the object itself)."""
    if isinstance(value, dict):
        text = _object_text(value, info)
        if not isinstance(text, str):
            raise PydanticCustomError(
                "document",
                "must be a string or an object with a string 'text' field, got {kind}",
                {"kind": _json_kind(text)},
            )
        _utf8(text)
        if (info.data or {}).get("return_documents", True):
            returned = value.get("text")
            if returned is not None and not isinstance(returned, str):
                # ranked by rank_fields, but the 'text' it would be returned with is not one
                raise PydanticCustomError("document", "cannot be returned as sent: its 'text' is {kind}, not a "
                                          "string (leave 'text' out, or set return_documents to false)",
                                          {"kind": _json_kind(returned)})
            _returnable(value)
        return ObjectDocument(text, value)
    if not isinstance(value, str):
        raise PydanticCustomError(
            "document",
            "must be a string or an object with a string 'text' field, got {kind}",
            {"kind": _json_kind(value)},
        )
    return _utf8(value)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", list: "array", dict: "object", str: "string"}.get(
        type(value), type(value).__name__
    )


Text = Annotated[str, AfterValidator(_utf8)]
"""Any string (may be empty) that is valid Unicode."""

QueryText = Annotated[str, Field(min_length=1), AfterValidator(_utf8), AfterValidator(_not_blank)]
"""A non-blank string."""

# validated as str | ObjectDocument (the inner type is Any so that the OpenAPI document does not publish the
# dataclass, which no client sends)
Document = Annotated[
    Any,
    PlainValidator(_document),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                # 'text' is required unless the request's rank_fields names the keys to rank by (JSON Schema
                # cannot say that across fields)
                {"type": "object", "properties": {"text": {"type": "string"}}},
            ]
        }
    ),
]
"""A document: a string, or a Jina/vLLM/Cohere object ``{"text": ...}`` (other keys are kept, to be returned), or,
when the request names ``rank_fields``, an object ranked by those keys (:func:`ranked_text`). A string stays a
``str``; an object becomes an :class:`ObjectDocument` (the text it is ranked by, and the object itself, not copied);
:func:`document_text` gives either one's text. Unless the request's ``return_documents`` is false, an object must be
one the results can return as sent (:func:`_returnable`)."""

TextList = Annotated[
    list[Text],
    BeforeValidator(_as_list),
    Field(min_length=1),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}),
]
"""One string or a non-empty list of strings (a string is a list of one)."""

QueryList = Annotated[
    list[QueryText],
    BeforeValidator(_as_list),
    Field(min_length=1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
            ]
        }
    ),
]
"""One non-blank string or a non-empty list of them."""

ModelName = Annotated[str, Field(max_length=1024), AfterValidator(_utf8)]
FieldName = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_utf8)]
Instruction = Annotated[str, Field(max_length=100_000), AfterValidator(_utf8)]
# the before-validator hides the bounds from pydantic's schema (it would print them as "ge"/"le", which JSON
# Schema does not know): spell them as JSON Schema
PositiveInt = Annotated[
    int,
    BeforeValidator(_whole_number),
    Field(ge=1, le=MAX_INT),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_INT}),
]
# vLLM's truncate_prompt_tokens: -1 (the model's window) or a positive count; 0 and more than the window are refused
# by the door, which knows the model (qrank.server.inference.prompt_tokens)
PromptTokens = Annotated[
    int,
    BeforeValidator(_whole_number),
    Field(ge=-1, le=MAX_INT),
    WithJsonSchema({"type": "integer", "minimum": -1, "maximum": MAX_INT}),
]


class ErrorDetail(BaseModel):
    type: str = Field(description="error class, e.g. InvalidInput, TooLarge, Overloaded, Unauthorized, NotFound")
    message: str = Field(description="what is wrong, naming the field")
    field: str | None = Field(description="the part of the request at fault (documents[2], body, host, ...)")
    param: str | None = Field(description="the same as field (OpenAI clients read param)")
    code: int = Field(description="the HTTP status")


class ErrorResponse(BaseModel):
    """Every error answer of the server (see qrank.server.errors): OpenAI-style ``error`` plus a top-level
    ``message`` (Cohere-style)."""

    error: ErrorDetail
    message: str


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


# documented on every route: the middleware can answer each of these before a route runs
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("malformed request: not JSON, not UTF-8, wrong content type, or a Host this server does not answer"),
    401: _error("missing or wrong API key (when the server has one); /health and /ready need none"),
    404: _error("unknown route, model or collection"),
    413: _error("body, document or input larger than the server's limits"),
    422: _error("a field is invalid; error.field names it"),
    429: _error("overloaded (too many requests in flight or queued); retry after the Retry-After header"),
    431: _error("request line and headers larger than the server's limit"),
    503: _error("shutting down, or (on /ready) not ready yet"),
}


class Usage(ResponseModel):
    prompt_tokens: int | None = None
    total_tokens: int

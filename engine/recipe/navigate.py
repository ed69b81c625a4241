"""Find the recipe model type at a key path of a raw tree (for did-you-mean on unknown keys, docs and checks)."""

from __future__ import annotations

import typing
from typing import Any, Optional, Union

from pydantic import BaseModel, Discriminator
from pydantic.fields import FieldInfo

_UNION_TYPES = (Union, getattr(__import__("types"), "UnionType", Union))


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """Strip Annotated, returning the inner type and its metadata."""
    meta: list[Any] = []
    while typing.get_origin(tp) is typing.Annotated:
        args = typing.get_args(tp)
        tp, meta = args[0], meta + list(args[1:])
    return tp, meta


def _discriminator(meta: list[Any]) -> Any:
    for m in meta:
        if isinstance(m, FieldInfo) and m.discriminator is not None:
            return m.discriminator
        if isinstance(m, Discriminator):
            return m
    return None


def _tag_of(member: Any) -> Optional[str]:
    _, meta = _unwrap(member)
    for m in meta:
        if type(m).__name__ == "Tag":
            return m.tag
    return None


def _literal_values(cls: type[BaseModel], field: str) -> tuple:
    info = cls.model_fields.get(field)
    if info is None:
        return ()
    tp, _ = _unwrap(info.annotation)
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else ()


def _members(tp: Any) -> list[Any]:
    return list(typing.get_args(tp))


def choose(tp: Any, value: Any) -> Any:
    """Resolve unions (discriminated or not) against a value; returns a concrete type."""
    tp, meta = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin in _UNION_TYPES:
        disc = _discriminator(meta)
        members = _members(tp)
        if isinstance(disc, Discriminator) and callable(disc.discriminator):
            tag = disc.discriminator(value)
            for m in members:
                if _tag_of(m) == tag:
                    return choose(m, value)
            return None
        if isinstance(disc, str) and isinstance(value, dict):
            for m in members:
                inner = choose(m, value)
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    if value.get(disc) in _literal_values(inner, disc):
                        return inner
            return None
        # plain union: pick by shape
        for m in members:
            inner = choose(m, value)
            if isinstance(value, dict) and (
                (isinstance(inner, type) and issubclass(inner, BaseModel)) or typing.get_origin(inner) is dict
            ):
                return inner
            if isinstance(value, list) and typing.get_origin(inner) is list:
                return inner
        return None
    return tp


def child_type(tp: Any, key: Any, value: Any) -> Any:
    """Type of `value[key]` given that `value` has type `tp`."""
    tp = choose(tp, value)
    if tp is None:
        return None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, info in tp.model_fields.items():
            if key in (name, info.alias):
                return info.annotation
        return None
    origin = typing.get_origin(tp)
    if origin is dict:
        return typing.get_args(tp)[1]
    if origin is list:
        return typing.get_args(tp)[0]
    return None


def model_at(root: Any, tree: Any, path: tuple) -> Optional[type[BaseModel]]:
    """The Block class describing the mapping at `path` in `tree`, if any."""
    tp, node = root, tree
    for key in path:
        if node is None:
            return None
        tp = child_type(tp, key, node)
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            node = None
        if tp is None:
            return None
    concrete = choose(tp, node)
    return concrete if isinstance(concrete, type) and issubclass(concrete, BaseModel) else None


def field_names(cls: type[BaseModel]) -> list[str]:
    """Keys a user may write in a block (aliases where set)."""
    return [info.alias or name for name, info in cls.model_fields.items()]

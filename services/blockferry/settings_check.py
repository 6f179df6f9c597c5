"""Settings no role reads: a misspelt key of the configuration file or a misspelt
``BLOCKFERRY_…`` variable is otherwise ignored without a word (each role reads its own
sections of one shared file and environment, so none can refuse the others')."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

NOT_SETTINGS = frozenset(
    {
        "CONFIG_FILE",  # names the file itself
        "LOG_LEVEL",
        "LOG_FORMAT",
        "API_URL",  # the CLI's
        "API_TOKEN_FILE",
        "API_CA_FILE",
        "REPO_KEY_FILE",
        "REPO_PASSPHRASE_FILE",
    }
)
"""``BLOCKFERRY_`` variables read by other than the settings."""

Tree = dict[str, Any]
"""A settings model's keys: a nested model's are a tree, a map's (a dict of values)
:data:`MAP`, any other value's :data:`LEAF`."""

LEAF, MAP = "leaf", "map"


def settings_tree(models: Iterable[type[BaseModel]]) -> Tree:
    """The keys ``models`` read, merged."""
    merged: Tree = {}
    for model in models:
        _merge(merged, _tree(model))
    return merged


def unknown_variables(tree: Tree, environ: Mapping[str, str]) -> list[str]:
    """The ``BLOCKFERRY_…`` variables of ``environ`` no key of ``tree`` takes (nested
    with ``__``)."""
    found = []
    for name in sorted(environ):
        if not name.startswith("BLOCKFERRY_") or name[11:] in NOT_SETTINGS:
            continue
        if not _known(tree, name[11:].lower().split("__")):
            found.append(name)
    return found


def unknown_keys(tree: Tree, data: Mapping[str, Any], at: str = "") -> list[str]:
    """The keys of a configuration file's ``data`` that ``tree`` does not have, dotted."""
    found = []
    for key, value in data.items():
        where = f"{at}{key}"
        below = tree.get(str(key))
        if below is None:
            found.append(where)
        elif isinstance(below, dict) and isinstance(value, Mapping):
            found += unknown_keys(below, value, f"{where}.")
    return found


def _known(tree: Tree, path: list[str]) -> bool:
    node: Any = tree
    for part in path:
        if node == MAP:
            return True  # a map's own keys are the user's
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _tree(model: type[BaseModel]) -> Tree:
    tree: Tree = {}
    for name, field in model.model_fields.items():
        nested = _model_of(field.annotation)
        if nested is not None:
            tree[name] = _tree(nested)
        elif typing.get_origin(field.annotation) is dict:
            tree[name] = MAP
        else:
            tree[name] = LEAF
    return tree


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model ``annotation`` names, alone or with None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(models) == 1:
            return _model_of(models[0])
    return None


def _merge(into: Tree, other: Tree) -> None:
    for key, value in other.items():
        if isinstance(into.get(key), dict) and isinstance(value, dict):
            _merge(into[key], value)
        else:
            into.setdefault(key, value)

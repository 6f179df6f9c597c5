"""Checking a dashboard's JSON against the Grafana Foundation SDK's dashboard schema.

The SDK is generated (by cog) from Grafana's own schemas, but its Python package ships
no JSON schema, and its decoder, ``Dashboard.from_json``, is lenient: it reads the keys
it knows, drops the others, checks no type and fills in defaults. So the check reads the
schema from the SDK's model classes instead, and walks the JSON beside them:

- each model's fields and their types, from its type annotations: a field typed
  ``Optional`` may be left out, any other is required; an enum or a ``Literal`` holds
  only its values;
- each field's JSON key, from the model's own ``to_json``;
- as Grafana does, a panel's ``options`` and ``fieldConfig.defaults.custom`` against its
  panel plugin's models (by the panel's ``type``), and its queries against its data
  source's query model (by ``datasource.type``), both from the SDK's plugin registry.

A key no model has, a value of another type or outside its enum, a required key left
out, a panel or data source type the SDK does not know: each is a problem, and
:func:`check_dashboard` raises :class:`SchemaError` naming them all, each by its path
(``panels[2].fieldConfig.defaults.unit``)."""

from __future__ import annotations

import enum
import json
import types
import typing
from importlib.metadata import version
from typing import Any

from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as model

SDK = f"grafana-foundation-sdk {version('grafana-foundation-sdk')}"


class SchemaError(ValueError):
    """A dashboard's JSON does not hold to the SDK's dashboard schema."""


def check_dashboard(text: str, name: str = "dashboard") -> None:
    """Check a dashboard's JSON text against the SDK's dashboard schema.

    Raises:
        SchemaError: naming every place where it departs from the schema.
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"checking {name} against {SDK}'s dashboard schema: {exc}") from exc
    found = problems(document)
    if found:
        listed = "".join(f"\n  {problem}" for problem in found)
        raise SchemaError(f"{name} does not hold to {SDK}'s dashboard schema:{listed}")


def problems(document: object) -> list[str]:
    """Where a decoded dashboard departs from the SDK's dashboard schema."""
    plugins.register_default_plugins()  # the panel and data source models, by their types
    return _check(document, model.Dashboard, "")


class _Field(typing.NamedTuple):
    annotation: Any
    required: bool


def _fields(cls: type[Any]) -> dict[str, _Field]:
    """A model's fields by their JSON keys: its ``to_json`` run on an instance whose
    every attribute is a marker tells which key each attribute is written under."""
    if cls in _FIELDS:
        return _FIELDS[cls]
    hints = typing.get_type_hints(cls)
    probe: Any = object.__new__(cls)
    for attribute in hints:
        setattr(probe, attribute, _Marker(attribute))
    fields = {}
    for key, value in probe.to_json().items():
        if isinstance(value, _Marker):
            annotation = hints[value.attribute]
            fields[key] = _Field(annotation, not _optional(annotation))
    _FIELDS[cls] = fields
    return fields


_FIELDS: dict[type[Any], dict[str, _Field]] = {}


class _Marker:
    def __init__(self, attribute: str) -> None:
        self.attribute = attribute


def _optional(annotation: Any) -> bool:
    return _is_union(annotation) and type(None) in typing.get_args(annotation)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and callable(getattr(annotation, "from_json", None))


def _check(value: Any, annotation: Any, path: str) -> list[str]:
    """Where ``value`` (decoded JSON) departs from ``annotation`` (a model's field type)."""
    where = path or "the dashboard"
    if annotation in (Any, object) or annotation is cogvariants.Dataquery:
        return []  # checked by the panel that holds it (see _panel_plugins)
    if _is_union(annotation):
        alternatives = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return [] if _optional(annotation) else [f"{where}: null where a value is required"]
        attempts = [_check(value, alternative, path) for alternative in alternatives]
        return [] if [] in attempts else min(attempts, key=len)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        return [] if value in allowed else [f"{where}: {value!r} is not one of {allowed}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {_kind(value)} where a list is expected"]
        (item,) = typing.get_args(annotation)
        return [p for i, v in enumerate(value) for p in _check(v, item, f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {_kind(value)} where an object is expected"]
        _, item = typing.get_args(annotation)
        return [p for k, v in value.items() for p in _check(v, item, _at(path, k))]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        allowed = tuple(member.value for member in annotation)
        return [] if value in allowed else [f"{where}: {value!r} is not one of {allowed}"]
    if _is_model(annotation):
        return _check_model(value, annotation, path)
    if annotation in (str, bool, int, float):
        return (
            []
            if _is_a(value, annotation)
            else [f"{where}: {_kind(value)} where {annotation.__name__} is expected"]
        )
    return [f"{where}: the schema's type {annotation!r} is one this check cannot read"]


def _check_model(value: Any, cls: type[Any], path: str) -> list[str]:
    name = f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"
    if not isinstance(value, dict):
        return [f"{path or 'the dashboard'}: {_kind(value)} where an object ({name}) is expected"]
    fields = _fields(cls)
    found = [f"{_at(path, key)}: not a field of {name}" for key in value if key not in fields]
    found += [
        f"{path or 'the dashboard'}: no {key!r}, which {name} requires"
        for key, field in fields.items()
        if field.required and key not in value
    ]
    for key, field in fields.items():
        if key in value:
            found += _check(value[key], field.annotation, _at(path, key))
    if cls is model.Panel:
        found += _panel_plugins(value, path)
    return found


def _panel_plugins(panel: dict[str, Any], path: str) -> list[str]:
    """A panel's options, custom field config and queries, against the models of its
    panel plugin and of its data source."""
    found = []
    kind = panel.get("type")
    config = cogruntime.panelcfg_config(kind) if isinstance(kind, str) else None
    if config is None:
        found.append(f"{path}.type: {kind!r} is not a panel type the SDK knows")
    else:
        if "options" in panel:
            options = _model_of(config.options_from_json_hook)
            found += _check(panel["options"], options, f"{path}.options")
        custom = _get(panel, "fieldConfig", "defaults", "custom")
        if custom is not None:
            field_config = _model_of(config.field_config_from_json_hook)
            found += _check(custom, field_config, f"{path}.fieldConfig.defaults.custom")
    targets = panel.get("targets")
    if isinstance(targets, list):
        source = _get(panel, "datasource", "type")
        variant = cogruntime.Runtime().dataquery_variants.get(source)
        if variant is None:
            found.append(f"{path}.datasource.type: {source!r} is not a data source the SDK knows")
        else:
            query = _model_of(variant.from_json_hook)
            for i, target in enumerate(targets):
                found += _check(target, query, f"{path}.targets[{i}]")
    return found


def _model_of(hook: Any) -> Any:
    """The model class whose ``from_json`` is ``hook`` (``object`` for none: unchecked)."""
    owner = getattr(hook, "__self__", None)
    return owner if _is_model(owner) else object


def _get(value: Any, *keys: str) -> Any:
    """``value[key][key]…``, or None where a key or an object is missing."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_a(value: object, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _kind(value: object) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"

"""Plugin options: `-o key=value` pairs or suite-file mappings, checked against a dataclass."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import field
from typing import Any, Iterable, Mapping

import yaml

from harness.errors import UsageError, did_you_mean


def option(default: Any = dataclasses.MISSING, help: str = "", *,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A field of a plugin's options dataclass with its help text (`harness list NAME`
    shows it): `rank: int = option(64, "bottleneck width r")`."""
    return field(default=default, default_factory=default_factory, metadata={"help": help})


def parse_pairs(pairs: Iterable[str], flag: str) -> dict[str, Any]:
    """`["lr=1e-3", "layers=[1,2]"]` -> {"lr": 0.001, "layers": [1, 2]} (values read as YAML)."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            result[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            result[key.strip()] = raw
    return result


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except UsageError as exc:
                errors.append(str(exc))
        raise UsageError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise UsageError(f"{where}: must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (tuple, list):
        items = value if isinstance(value, (list, tuple)) else [
            v for v in str(value).split(",") if v != ""]
        inner = args[0] if args else Any
        coerced = [_coerce(v, inner, where) for v in items]
        return tuple(coerced) if origin is tuple else coerced
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise UsageError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"{where}: expected true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UsageError(f"{where}: expected a finite number, got {value!r}")
        if annotation is int and float(value) != int(value):
            raise UsageError(f"{where}: expected an integer, got {value!r}")
        return annotation(value)
    if annotation is str:
        if isinstance(value, (list, tuple, dict, set)) or value is None:
            raise UsageError(f"{where}: expected a single value, got {value!r}")
        return value if isinstance(value, str) else str(value)
    return value


def build_options(options_cls: type, values: Mapping[str, Any], owner: str) -> Any:
    """Instantiate the plugin's options dataclass, with one-line errors for bad keys/values."""
    fields = {f.name: f for f in dataclasses.fields(options_cls)}
    hints = typing.get_type_hints(options_cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise UsageError(f"{owner}: unknown option {key!r}{did_you_mean(key, fields)}; "
                             f"options: {known}")
        kwargs[key] = _coerce(value, hints[key], f"{owner} option {key!r}")
    try:
        return options_cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{owner}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    """One option as `harness list` shows it."""

    name: str
    type: str
    default: Any
    help: str
    required: bool = False


def option_infos(options_cls: type) -> list[OptionInfo]:
    """Name, type, default and help text (field metadata) of every option."""
    hints = typing.get_type_hints(options_cls)
    infos = []
    for field in dataclasses.fields(options_cls):
        if field.default is not dataclasses.MISSING:
            default, required = field.default, False
        elif field.default_factory is not dataclasses.MISSING:
            default, required = field.default_factory(), False
        else:
            default, required = None, True
        infos.append(OptionInfo(field.name, type_name(hints.get(field.name, Any)), default,
                                _help(options_cls, field), required))
    return infos


def _help(options_cls: type, field: dataclasses.Field) -> str:
    """A field's help text; a subclass that only changes a default keeps its base's text."""
    for klass in options_cls.__mro__:
        fields = getattr(klass, "__dataclass_fields__", {})
        if field.name in fields and fields[field.name].metadata.get("help"):
            return str(fields[field.name].metadata["help"])
    return ""


def type_name(annotation: Any) -> str:
    """`int | None` -> "int | None", `Literal["a", "b"]` -> "a|b", `tuple[str, ...]` -> "list of str"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return " | ".join(type_name(a) for a in args)
    if origin in (tuple, list):
        return f"list of {type_name(args[0]) if args else 'any'}"
    if origin is dict or annotation is dict:
        return "mapping"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))

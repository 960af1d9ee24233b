"""YAML -> frozen, typed dataclasses, with errors that name the file, the key and the choices.

Device presets and study files both go through :func:`build`. A dataclass field's type hint
is the schema: ``int``, ``float``, ``bool``, ``str``, ``Literal[...]`` (the allowed values),
``list[...]``, ``X | None``, or another dataclass (a nested mapping). Unknown keys, missing
required keys and wrong types are :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from hwsim.errors import ConfigError


class _DuplicateKey(Exception):
    def __init__(self, key, first: int, line: int):
        self.key, self.first, self.line = key, first, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, but a mapping that names a key twice is an error (PyYAML keeps the
    last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; ConfigError for a missing file, bad YAML or a non-mapping."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: line {e.line}: key {e.key!r} is given twice (at lines "
                          f"{e.first} and {e.line}); keep one") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(tp) if f.init)
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


class _Where:
    """A position in a file: ``file: key.sub[2]``, for error messages."""

    def __init__(self, file: str, path: str = ""):
        self.file, self.path = file, path

    def key(self, name: str) -> _Where:
        return _Where(self.file, f"{self.path}.{name}" if self.path else name)

    def index(self, i: int) -> _Where:
        return _Where(self.file, f"{self.path}[{i}]")

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.path}: {message}" if self.path
                           else f"{self.file}: {message}")


def _convert(value: Any, tp: Any, where: _Where) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise where.error(f"{value!r} is not allowed; choose {_describe(tp)}")
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        if len(args) == 1:
            return _convert(value, args[0], where)
        for arg in args:
            try:
                return _convert(value, arg, where)
            except ConfigError:
                pass
        raise where.error(f"{value!r} is not allowed; expected {_describe(tp)}")
    if origin is list:
        if not isinstance(value, list):
            value = [value]  # a single value stands for a one-element list
        (item_tp,) = typing.get_args(tp)
        return tuple(_convert(v, item_tp, where.index(i)) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp, tp is Any)
    if not ok:
        raise where.error(f"{value!r} is not allowed; expected {_describe(tp)}")
    return float(value) if tp is float else value


def _build(cls: type, data: Any, where: _Where) -> Any:
    if not isinstance(data, dict):
        raise where.error(f"expected {_describe(cls)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for k in data:
        if k not in fields:
            raise where.key(str(k)).error(f"unknown key; allowed keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], where.key(name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise where.key(name).error(f"missing required key ({_describe(hints[name])})")
    try:
        return cls(**kwargs)
    except ValueError as e:  # a dataclass's __post_init__ checks (ranges, consistency)
        key, sep, message = str(e).partition(": ")
        if sep and key.split(".")[0] in fields:  # "field: message" names the key
            raise where.key(key).error(message) from None
        raise where.error(str(e)) from None


def build(cls: type, data: Any, file: str | Path) -> Any:
    """Validate ``data`` (a mapping read from ``file``) into dataclass ``cls``.

    Nested dataclass fields take nested mappings; list-typed fields come back as tuples.
    ``__post_init__`` may raise ValueError("key: message") for checks across fields, ``key``
    a field of the dataclass that raises it (the error then names its full path).

    Raises:
        ConfigError: ``"<file>: <key.path>: <what is wrong; what is allowed>"``.
    """
    return _build(cls, data, _Where(str(file)))


def load(cls: type, path: str | Path) -> Any:
    """Read YAML file ``path`` and validate it into ``cls``."""
    return build(cls, read_yaml(path), path)


def to_plain(obj: Any) -> Any:
    """A dataclass (nested, with tuples) as plain dicts/lists, for YAML/JSON/checkpoints."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj

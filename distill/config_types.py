"""How a config mapping is checked against its dataclasses' fields before anything is built: unknown keys (with a
did-you-mean), renamed keys (`renamed_keys`), and each value against its field's type hint (`check_value`: ints,
floats, bools, strings, lists, mappings, Literals, unions and nested dataclasses built by `typed`), so
`temperature: [1, 2]`, `seed: 1.5` or `max_retries: true` fail as one line naming the file and key (`ConfigError`).

    python -c "from distill.config_types import check_value; print(check_value('3', int, 'seed'))"
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config that cannot run: the message is one line naming the file / key and what is wrong."""


def _hints(cls: type) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an unresolvable annotation in a third-party class: check nothing rather than crash
        return {}


def _type_name(hint) -> str:
    if hint is type(None):
        return "null"
    if isinstance(hint, type):
        return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true/false",
                "list": "a list", "dict": "a mapping"}.get(hint.__name__, hint.__name__)  # fmt: skip
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_type_name(a) for a in typing.get_args(hint)))
    if origin is list:
        (arg,) = typing.get_args(hint) or (typing.Any,)
        return f"a list of {_type_name(arg).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a mapping"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return str(hint)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_value(value, hint, where: str):
    """`value` as `hint` requires (ints widened to floats, a numeric string parsed, a nested dataclass built from a
    mapping); ConfigError naming `where` when it does not fit. Hints it does not know (enums, classes) pass."""
    if hint is typing.Any or isinstance(hint, typing.TypeVar):
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        # Try the exact-type members first, so `int | str` keeps "3" a string and 3 an int.
        for arg in sorted(args, key=lambda a: not (isinstance(a, type) and isinstance(value, a))):
            if arg is type(None):
                continue
            try:
                return check_value(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(hint)}, got {_shown(value)}")
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        raise ConfigError(f"{where}: expected {_type_name(hint)}, got {_shown(value)}")
    if origin is list or hint is list:
        (arg,) = typing.get_args(hint) or (typing.Any,)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_type_name(hint)}, got {_shown(value)}")
        return [check_value(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        args = typing.get_args(hint) or (typing.Any, typing.Any)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_shown(value)}")
        return {k: check_value(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return typed(hint, value, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {_shown(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {_shown(value)}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {_shown(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {_shown(value)}")
    return value  # enums and other classes: the library's own parser names the valid values


def _unknown_key(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint}")


def renamed_keys(config_classes: tuple[type, ...], mapping: dict, where: str) -> dict:
    """`mapping` with the old names of renamed fields (a class's `__renamed__`: old key -> new key) read as the new
    ones, each with a warning; ConfigError when one mapping holds both spellings."""
    renames = {old: new for cls in config_classes for old, new in getattr(cls, "__renamed__", {}).items()}
    out = dict(mapping)
    for old, new in renames.items():
        if old in out:
            if new in out:
                raise ConfigError(f"{where}: both {old!r} and {new!r}; keep {new!r} only ({old!r} is its old name)")
            log.warning("%s: %r is now spelled %r (read as such)", where, old, new)
            out[new] = out.pop(old)
    return out


def check_mapping(config_classes: tuple[type, ...], mapping: dict, where: str) -> dict:
    """`mapping` checked against the fields of `config_classes` (together): unknown keys and wrong types are
    ConfigErrors; returns the values as the fields' types want them (ints widened to floats and the like)."""
    fields: dict[str, tuple] = {}
    for cls in config_classes:
        # `__yaml_types__`: a field whose YAML may take another shape than its CLI flag (a mapping for NAME=PATH pairs)
        hints = {**_hints(cls), **getattr(cls, "__yaml_types__", {})}
        for f in dataclasses.fields(cls):
            if f.init:
                fields.setdefault(f.name, (hints.get(f.name, typing.Any), f))
    out = {}
    mapping = renamed_keys(config_classes, mapping, where)
    for key, value in mapping.items():
        if key not in fields:
            raise _unknown_key(str(key), list(fields), where)
        hint, f = fields[key]
        if value is None and f.default is None:
            out[key] = None  # `str = None` style fields: null means "not set"
            continue
        out[key] = check_value(value, hint, f"{where}: {key}")
    return out


def typed(cls: type, value, where: str):
    """A `cls` (a nested config dataclass) from a mapping, every key checked; an instance passes through."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(cls))}, "
                          f"got {_shown(value)}")  # fmt: skip
    checked = check_mapping((cls,), value, where)
    try:
        return cls(**checked)
    except TypeError as e:  # a required key is missing
        raise ConfigError(f"{where}: {e}") from None

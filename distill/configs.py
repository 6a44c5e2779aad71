"""Config plumbing shared by every stage: YAML recipe + CLI overrides via TRL's parser, type checks, saving the result.

Each stage declares typed dataclasses (every field with a `help`); `parse_configs` fills them from `--config recipe.yaml`
(defaults) and CLI flags (overrides). Before anything is built, every YAML value is checked against its field's type
hint (`check_value`: ints, floats, bools, strings, lists, mappings, Literals, nested dataclasses), so
`temperature: [1, 2]`, `seed: 1.5` or `max_retries: true` fail as one line naming the file and key instead of being
sent to a server or crashing later. Unknown keys, a missing file and YAML syntax errors are one-line `ConfigError`s.
Nested sections (filter thresholds, dedup, ...) are dataclasses built with `typed(cls, mapping, where)`.

    python -c "from distill.cli import load_stage; from distill.configs import parse_configs; \
        print(parse_configs(load_stage('generate').configs, ['--config', 'recipes/demo/generate.yaml']))"
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import logging
import os
import types
import typing
from pathlib import Path

import yaml

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config that cannot run: the message is one line naming the file / key and what is wrong."""


def read_yaml_mapping(path: str | Path) -> dict:
    """The YAML mapping in `path`; ConfigError (one line) for a missing file, a folder, bad syntax or a non-mapping."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path}: not found")
    if path.is_dir():
        raise ConfigError(f"config file {path}: is a folder, expected a YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path}: cannot read: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a YAML mapping of keys to values, got {type(data).__name__}")
    return data


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
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return value  # the library's own parser names the valid members
    return value


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


def parse_configs(config_classes: tuple[type, ...], argv: list[str], prog: str | None = None, **help_) -> tuple:
    """Instances of `config_classes` from `argv` (which may hold `--config FILE`); `help_`: argparse's description and
    epilog for `--help`, which also lists `--config` and `--log_level` (the CLI takes those out of argv).

    Raises ConfigError (one line) for a missing/unreadable/malformed file, unknown keys, wrong types and values the
    dataclasses' `__post_init__` refuses; argparse's own SystemExit for bad command-line flags.
    """
    from trl import TrlParser

    argv = list(argv)
    parser = TrlParser(config_classes, prog=prog, **help_)
    parser.add_argument("--config", metavar="RECIPE.yaml", help="Recipe whose keys set these flags' values (flags "
                        "given on the command line win); unknown keys and wrong types are refused.")  # fmt: skip
    if not any(f.name == "log_level" for c in config_classes for f in dataclasses.fields(c)):  # train has its own
        parser.add_argument("--log_level", metavar="LEVEL", help="DEBUG, INFO (default), WARNING or ERROR.")
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a file")
        path = argv[i + 1]
        del argv[i : i + 2]
        mapping = read_yaml_mapping(path)
        env = mapping.pop("env", None) or {}
        if not isinstance(env, dict):
            raise ConfigError(f"{path}: env: expected a mapping of variable names to values")
        for key, value in env.items():  # TrlParser's `env:` section, kept
            os.environ[str(key)] = str(value)
        parser.set_defaults_with_config(**check_mapping(config_classes, mapping, str(path)))
    return _build(parser, argv)


def _build(parser, argv: list[str]) -> tuple:
    import argparse

    try:  # the Namespace HfArgumentParser adds for --config / --log_level (already consumed) is not a config
        return tuple(c for c in parser.parse_args_into_dataclasses(args=argv) if not isinstance(c, argparse.Namespace))
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # a __post_init__ check: keep its message, on one line
        raise ConfigError(" ".join(str(e).split())) from None


def configs_from_mapping(config_classes: tuple[type, ...], mapping: dict, where: str) -> tuple:
    """Instances of `config_classes` from a mapping, checked exactly as a `--config` file is (for `distill run`,
    which validates every stage before the first one starts). The process environment is left as it was: some
    `__post_init__`s set variables for their own process (single-process DeepSpeed)."""
    from trl import TrlParser

    mapping = dict(mapping)
    mapping.pop("env", None)
    saved = dict(os.environ)
    try:
        parser = TrlParser(config_classes)
        parser.set_defaults_with_config(**check_mapping(config_classes, mapping, where))
        try:
            return _build(parser, [])
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        except SystemExit:  # argparse: a required field missing, or a value its type refuses (already printed)
            raise ConfigError(f"{where}: invalid or missing values (see the message above)") from None
    finally:
        os.environ.clear()
        os.environ.update(saved)


def named_items(value, flag: str, noun: str, form: str = "NAME=PATH", stem_names: bool = True) -> dict[str, str]:
    """{name: value} from a YAML mapping or `NAME=VALUE` strings (the CLI form of `--traces`, `--embedders`); with
    `stem_names` a bare path is named by its file stem. ValueError `<flag> item 'x' must be <form>` for an item
    without a name or a value, `<noun> 'x' given twice` for a repeated name."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    out: dict[str, str] = {}
    for item in [value] if isinstance(value, str) else list(value or []):
        name, sep, rest = item.partition("=")
        if not sep and stem_names:
            name, rest = Path(item).stem, item
        if not (name and rest):
            raise ValueError(f"{flag} item {item!r} must be {form}")
        if name in out:
            raise ValueError(f"{noun} {name!r} given twice")
        out[name] = rest
    return out


def config_dict(*configs) -> dict:
    """The resolved configs as one plain dict (for logging and saving next to outputs), credentials removed from
    every URL in it (`distill.urls`)."""
    from distill.urls import redacted

    out: dict = {}
    for c in configs:
        d = c.to_dict() if hasattr(c, "to_dict") else dataclasses.asdict(c)
        out.update({k: v for k, v in d.items() if not k.startswith("_")})
    return redacted(out)


def save_resolved_config(path: str | Path, *configs) -> dict:
    """Write the resolved configs as YAML to `path` (atomically) and log them; returns the dict."""
    from distill.io import write_text_atomic

    resolved = config_dict(*configs)
    write_text_atomic(path, yaml.safe_dump(resolved, sort_keys=False, default_flow_style=False))
    log.info("resolved config -> %s", path)
    return resolved

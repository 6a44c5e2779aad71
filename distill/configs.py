"""Config plumbing shared by every stage: YAML recipe + CLI overrides via TRL's parser, type checks, saving the result.

Each stage declares typed dataclasses (every field with a `help`); `parse_configs` fills them from `--config recipe.yaml`
(defaults) and CLI flags (overrides). Before anything is built, every YAML value is checked against its field's type
hint (`distill.config_types.check_value`: ints, floats, bools, strings, lists, mappings, Literals, nested dataclasses), so
`temperature: [1, 2]`, `seed: 1.5` or `max_retries: true` fail as one line naming the file and key instead of being
sent to a server or crashing later. Unknown keys, a missing file and YAML syntax errors are one-line `ConfigError`s.
Nested sections (filter thresholds, dedup, ...) are dataclasses built with `typed(cls, mapping, where)`.

    python -c "from distill.cli import load_stage; from distill.configs import parse_configs; \
        print(parse_configs(load_stage('generate').configs, ['--config', 'recipes/demo/generate.yaml']))"
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import yaml

from distill.config_types import (  # noqa: F401 (the checks every caller reaches through distill.configs)
    ConfigError,
    check_mapping,
    check_value,
    renamed_keys,
    typed,
)

log = logging.getLogger(__name__)


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

"""Config plumbing shared by every stage: YAML recipe + CLI overrides via TRL's parser, and saving the resolved config.

Each stage declares typed dataclasses (every field with a `help`); `parse_configs` fills them from `--config recipe.yaml`
(defaults) and CLI flags (overrides). Unknown keys in the YAML or on the command line fail with the key named.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import yaml

log = logging.getLogger(__name__)


def parse_configs(config_classes: tuple[type, ...], argv: list[str], prog: str | None = None) -> tuple:
    """Instances of `config_classes` from `argv` (which may hold `--config FILE`). Raises SystemExit/ValueError."""
    from trl import TrlParser

    parser = TrlParser(config_classes, prog=prog)
    return tuple(parser.parse_args_and_config(argv))


def config_dict(*configs) -> dict:
    """The resolved configs as one plain dict (for logging and saving next to outputs)."""
    out: dict = {}
    for c in configs:
        d = c.to_dict() if hasattr(c, "to_dict") else dataclasses.asdict(c)
        out.update({k: v for k, v in d.items() if not k.startswith("_")})
    return out


def save_resolved_config(path: str | Path, *configs) -> dict:
    """Write the resolved configs as YAML to `path` (atomically) and log them; returns the dict."""
    from distill.io import write_text_atomic

    resolved = config_dict(*configs)
    write_text_atomic(path, yaml.safe_dump(resolved, sort_keys=False, default_flow_style=False))
    log.info("resolved config -> %s", path)
    return resolved

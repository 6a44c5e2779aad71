"""A student checkpoint, resolved once: that it can load (config and weight headers read, in milliseconds), whether it
is a full checkpoint or a PEFT LoRA adapter (and over which base), and its fingerprint (what `reason`'s journal keys
and rows record, so answers of one model are never reused for another saved at the same path).

    python -c "from distill.checkpoint import resolve_checkpoint; print(resolve_checkpoint('runs/demo/train/model'))"

`resolve_checkpoint` is cached per process by the folders' file listings (names, sizes, mtimes): `reason`'s early check,
its journal keys and the model load share one resolution; a checkpoint saved again at the same path resolves anew.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# Weight files above this size are fingerprinted by (size, mtime) instead of content (checkpoints of several GB).
CONTENT_HASH_MAX_BYTES = 64 * 2**20
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".json")


def checkpoint_fingerprint(*paths: str | Path) -> str:
    """A short hash of the weights and configs in checkpoint directories: journaled answers of one model are never
    reused for another model saved at the same path (a retrained student)."""
    h = hashlib.sha256()
    for path in paths:
        for f in sorted(p for p in Path(path).iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES):
            st = f.stat()
            h.update(f.name.encode())
            if st.st_size > CONTENT_HASH_MAX_BYTES:
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            else:
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _json_file(path: Path) -> dict:
    """A checkpoint's JSON config, or ValueError naming the file, line and reason."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {e.lineno}: not valid JSON ({e.msg}); the checkpoint is damaged") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; the checkpoint is damaged") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def adapter_base(path: str | Path) -> str | None:
    """The base model an adapter directory names (PEFT's `adapter_config.json`), or None for a full checkpoint.
    ValueError when the file is damaged or names no base (null: it was never a full checkpoint)."""
    cfg = Path(path) / "adapter_config.json"
    if not cfg.exists():
        return None
    base = _json_file(cfg).get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise ValueError(f"{cfg}: base_model_name_or_path is {json.dumps(base)}: this LoRA adapter does not name its "
                         "base model; pass --base_model PATH")  # fmt: skip
    return base


def check_checkpoint(path: str | Path, what: str = "--model") -> None:
    """ValueError (one line naming the file) unless `path` looks loadable: a folder with a valid config.json or
    adapter_config.json and weight files whose safetensors headers cover the file (a truncated copy fails here, in
    milliseconds, instead of deep inside `from_pretrained`). Only headers are read."""
    from safetensors import SafetensorError, safe_open

    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{what} {path}: no such checkpoint directory")
    configs = [folder / n for n in ("config.json", "adapter_config.json") if (folder / n).is_file()]
    if not configs:
        raise ValueError(f"{what} {path}: not a checkpoint (no config.json or adapter_config.json in it)")
    for cfg in configs:
        _json_file(cfg)
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    if not weights:
        raise ValueError(f"{what} {path}: no weight files (*.safetensors, *.bin) in it")
    for f in weights:
        if f.suffix != ".safetensors":
            continue
        try:
            with safe_open(str(f), "pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{f}: unreadable weights ({e}); the file is truncated or damaged") from None


@dataclass(frozen=True)
class Checkpoint:
    path: str
    base: str | None  # a LoRA adapter's base checkpoint; None: a full checkpoint
    fingerprint: str

    @property
    def is_adapter(self) -> bool:
        return self.base is not None


def resolve_checkpoint(path: str, base_model: str | None = None) -> Checkpoint:
    """The checkpoint at `path` (`base_model`: an adapter's base, overriding adapter_config.json's), checked:
    ValueError, one line naming the file and field, for a missing, damaged, empty or truncated checkpoint, an adapter
    without a base, or a `base_model` given for a full checkpoint."""
    return _resolve(str(path), base_model, _listing(path), _listing(base_model) if base_model else ())


def _listing(path) -> tuple:
    folder = Path(path)
    if not folder.is_dir():
        return ()
    return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir() if f.is_file()))


@lru_cache(maxsize=16)
def _resolve(path: str, base_model: str | None, _listing_path: tuple, _listing_base: tuple) -> Checkpoint:
    check_checkpoint(path)
    base = adapter_base(path) if base_model is None else base_model
    if base_model and not (Path(path) / "adapter_config.json").is_file():
        raise ValueError(f"--base_model {base_model}: --model {path} is a full checkpoint (no adapter_config.json), "
                         "not a LoRA adapter; drop --base_model")  # fmt: skip
    if base:
        what = "--base_model" if base_model else f"{path}/adapter_config.json: base_model_name_or_path"
        try:
            check_checkpoint(base, what)
        except ValueError as e:
            hint = "" if base_model else " (pass --base_model PATH to use a local copy)"
            raise ValueError(f"{e}{hint}") from None
    return Checkpoint(path, base, checkpoint_fingerprint(*(p for p in (base, path) if p)))

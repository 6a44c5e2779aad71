"""Which pip extra installs each optional package, and the one line a user sees when one is missing.

    pip install distill            # validate, generate, merge, score (rule scorers), filter, export, reason
    pip install 'distill[train]'   # + DeepSpeed            'distill[serve]'  # + FastAPI, uvicorn, Prometheus client
    pip install 'distill[eval]'    # + eval, embed: sentence-transformers, ir-measures, matplotlib
    pip install 'distill[video]'   # + PyAV

The package imports these only inside the feature that needs them (tests/test_packaging.py checks that no module of
the base install imports one at load time, and that this table matches pyproject.toml's extras). A missing one raises
ModuleNotFoundError as usual; `missing_extra` turns it into `needs <package>: pip install 'distill[<extra>]'`, which
the CLI prints as its one error line (exit 2).
"""

from __future__ import annotations

# import name -> (distribution, extra)
OPTIONAL: dict[str, tuple[str, str]] = {
    "deepspeed": ("deepspeed", "train"),
    "fastapi": ("fastapi", "serve"),
    "starlette": ("starlette", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "prometheus_client": ("prometheus-client", "serve"),
    "sentence_transformers": ("sentence-transformers", "eval"),
    "ir_measures": ("ir-measures", "eval"),
    "matplotlib": ("matplotlib", "eval"),
    "av": ("av", "video"),
}


def install_hint(module: str) -> str | None:
    """`needs X: pip install 'distill[extra]'` for an optional top-level module name, else None."""
    entry = OPTIONAL.get(module.split(".")[0])
    if entry is None:
        return None
    dist, extra = entry
    return f"needs {dist}, which this install lacks: pip install 'distill[{extra}]'"


def missing_extra(e: BaseException) -> str | None:
    """The install hint for a ModuleNotFoundError of an optional package, None for anything else (a real bug)."""
    if isinstance(e, ModuleNotFoundError) and e.name:
        return install_hint(e.name)
    return None

"""The stage contract every verb follows: where its resolved config and summary go, what its summary holds, and the
error boundary that turns expected failures into one line and exit status 2.

    distill score --input missing.jsonl --output /tmp/x.jsonl --config recipes/demo/score.yaml   # one line, exit 2

- Files: a stage whose main output is a file `dir/name.jsonl` writes `dir/name.config.yaml` and `dir/name.summary.json`;
  one whose main output is a folder writes `folder/config.yaml` and `folder/summary.json` (`contract_paths`).
- Summary schema (`summary`): `stage`, `rows_in`, `rows_out`, `dropped` {reason: count}, `seconds`, `tokens`
  {prompt, completion}, `problems` [{line, id, reason}] (the first 200), then stage-specific keys. `distill run` reads
  only this file to report a stage.
- Errors: `preflight` checks inputs and outputs before any work (missing or unreadable input, a folder where a file
  is expected, an output path that is a folder or cannot be written); `boundary` maps StageError, missing files,
  permissions and a full disk raised later to `distill <verb>: error: <what>` on stderr and exit 2.
- A stage whose every row failed for one reason exits 1 and says the reason (`all_failed_reason`).
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from distill.configs import ConfigError

# Exit statuses: 0 done, 1 the data failed (every row for one reason, --strict bad rows), 2 the run could not start or
# hit an environment fault (config, files, disk), as argparse uses 2 for usage errors.
EXIT_DATA = 1
EXIT_USAGE = 2
PROBLEMS_KEPT = 200


class StageError(Exception):
    """An expected failure the user fixes (a path, a config value): the message is the one line they see."""


def contract_paths(output: str | Path) -> tuple[Path, Path]:
    """(resolved config path, summary path) of a stage whose main output is `output` (a file or a folder)."""
    out = Path(output)
    if out.suffix in (".jsonl", ".json", ".parquet"):
        stem = out.name[: -len(out.suffix)]
        return out.with_name(f"{stem}.config.yaml"), out.with_name(f"{stem}.summary.json")
    return out / "config.yaml", out / "summary.json"


def summary(stage: str, rows_in: int | None, rows_out: int | None, seconds: float, *, dropped: dict | None = None,
            tokens: dict | None = None, problems: list | None = None, **extra) -> dict:  # fmt: skip
    """One summary in the shared schema; stage-specific figures go after the common keys."""
    return {"stage": stage, "rows_in": rows_in, "rows_out": rows_out, "dropped": dict(dropped or {}),
            "seconds": round(seconds, 3), "tokens": tokens or {"prompt": 0, "completion": 0},
            "problems": list(problems or [])[:PROBLEMS_KEPT], **extra}  # fmt: skip


def reason_class(reason: str) -> str:
    """A problem's class for `dropped` counts: without the row id and the details after the first colon."""
    return re.sub(r"^row .*?: ", "", reason).split(":")[0][:80]


def all_failed_reason(rows_in: int, rows_out: int, dropped: dict) -> str | None:
    """The one reason every row failed for (rows came in, none came out, one reason), else None."""
    if rows_in and not rows_out and len(dropped) == 1:
        return next(iter(dropped))
    return None


def _writable_dir(folder: Path, what: str) -> None:
    """Create `folder` if needed and prove a file can be created in it (root ignores mode bits, so try it)."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise StageError(f"{what} {folder}: {probe} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".distill-write-check.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise StageError(f"{what} {folder}: cannot write there: {e.strerror or e}") from None


def preflight(inputs: Iterable = (), input_files: Iterable = (), output_files: Iterable = (),
              output_dirs: Iterable = ()) -> None:  # fmt: skip
    """StageError (one line) unless every input exists and reads, every `input_files` entry is a file, and every
    output can be written: checked before a stage sends a request or loads a model."""
    for p, must_be_file in [*((p, False) for p in inputs if p), *((p, True) for p in input_files if p)]:
        path = Path(p)
        if not path.exists():
            raise StageError(f"input {path}: does not exist")
        if must_be_file and path.is_dir():
            raise StageError(f"input {path}: is a folder, expected a file")
        if not os.access(path, os.R_OK):
            raise StageError(f"input {path}: cannot read it (permission denied)")
    for p in output_files:
        if not p:
            continue
        path = Path(p)
        if path.is_dir():
            raise StageError(f"output {path}: is a folder, expected a file path")
        _writable_dir(path.parent, f"output {path}: folder")
    for p in output_dirs:
        if not p:
            continue
        path = Path(p)
        if path.exists() and not path.is_dir():
            raise StageError(f"output folder {path}: is a file")
        _writable_dir(path, "output folder")


_ENV_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted"}  # fmt: skip


def error_line(e: BaseException) -> str | None:
    """The one-line message for an expected failure, None for a bug (which keeps its traceback)."""
    if isinstance(e, (StageError, ConfigError)):
        return " ".join(str(e).split())
    if isinstance(e, FileNotFoundError):
        return f"{e.filename or e}: not found"
    if isinstance(e, IsADirectoryError):
        return f"{e.filename}: is a folder, expected a file"
    if isinstance(e, NotADirectoryError):
        return f"{e.filename}: a part of this path is a file, not a folder"
    if isinstance(e, OSError) and e.errno in _ENV_ERRNOS:
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{_ENV_ERRNOS[e.errno]}"
    return None


def boundary(verb: str, fn: Callable[[], int | None]) -> int:
    """Run a stage's main; expected failures become `distill <verb>: error: ...` on stderr and exit 2."""
    try:
        return int(fn() or 0)
    except KeyboardInterrupt:
        print(f"distill {verb}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        line = error_line(e)
        if line is None:
            raise
        print(f"distill {verb}: error: {line}", file=sys.stderr)
        return EXIT_USAGE


def die_with_parent() -> None:
    """`preexec_fn` for children `distill run` owns: SIGTERM when their parent dies, even by SIGKILL (Linux
    PR_SET_PDEATHSIG; elsewhere a no-op), so no stage or teacher outlives the run."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _stage_io(verb: str, configs: tuple) -> dict:
    """What `preflight` checks for each verb, from its parsed configs (paths only; no file is opened)."""
    c = configs[0]
    if verb == "validate":
        return {"inputs": [c.input, c.image_root], "output_files": [c.report]}
    if verb == "generate":
        outs = [] if c.dry_run else [c.output, *(c.paths()[k] for k in ("journal", "summary", "config"))]
        return {"inputs": [c.input, c.prompts_dir, c.image_root], "output_files": outs}
    if verb == "merge":
        return {"input_files": c.inputs, "output_files": [c.output]}
    if verb == "score":
        return {"input_files": [c.input], "inputs": [c.image_root], "output_files": [c.output]}
    if verb == "filter":
        return {"input_files": [c.input], "output_files": [c.kept, c.rejected], "output_dirs": [c.report_dir]}
    if verb == "export":
        return {"input_files": [c.input, c.filter_summary], "inputs": [c.image_root], "output_dirs": [c.output]}
    if verb == "reason":
        outs = [c.output, *c.paths().values()]
        return {"inputs": [c.input, c.image_root, c.model if c.backend == "hf" else None], "output_files": outs}
    if verb == "train":
        return {"inputs": [c.dataset_path], "output_dirs": [c.output_dir]}
    return {}


def check_stage_io(verb: str, configs: tuple) -> None:
    """`preflight` for `verb`'s inputs and outputs (see `_stage_io`)."""
    preflight(**_stage_io(verb, configs))

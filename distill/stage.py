"""The stage contract every verb follows, kept in one place: a stage module declares a `Stage` (its configs, what it
reads and writes, a `run` that returns its summary) and `Stage.main` does the rest, for every verb alike.

    distill score --input missing.jsonl --output /tmp/x.jsonl --config recipes/demo/score.yaml   # one line, exit 2

- Order (`Stage.main`): `preflight` of the declared inputs and outputs, the stage's own `check`, its `hold` (a journal
  lock: taken before the config is written, so a second run never rewrites a running job's config), the resolved
  config written, `run`, the summary written, `publish` (a Hub push, once every file is final), the `verdict`.
- Files: a stage whose main output is a file `dir/name.jsonl` writes `dir/name.config.yaml` and `dir/name.summary.json`;
  one whose main output is a folder writes `folder/config.yaml` and `folder/summary.json` (`contract_paths`). In a
  multi-process launch only rank 0 writes them.
- Summary schema (`summary`): `stage`, `rows_in`, `rows_out`, `dropped` {reason: count}, `seconds`, `tokens`
  {prompt, completion}, `problems` [{line, id, reason}] (the first 200), then stage-specific keys. `distill run` reads
  only this file to report a stage.
- Errors: every expected failure is one line `distill <verb>: error: <what>` on stderr and one exit status from one
  table (`EXIT_STATUSES`, documented in docs/formats.md); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from distill.configs import ConfigError
from distill.extras import missing_extra
from distill.urls import redact_url

# The one table of exit statuses (docs/formats.md "Exit statuses"); argparse also uses 2 for a bad flag.
EXIT_OK = 0
EXIT_DATA = 1  # the data failed: every row for one reason, a bad row under --strict, nothing left to export or train
EXIT_USAGE = 2  # the run could not start or hit an environment fault: config, paths, a locked journal, disk, network
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT); `distill run` stopped by SIGTERM exits 143
EXIT_STATUSES = {EXIT_OK: "done", EXIT_DATA: "the data failed", EXIT_USAGE: "could not start / environment fault",
                 EXIT_INTERRUPTED: "interrupted"}  # fmt: skip
PROBLEMS_KEPT = 200


class StageError(Exception):
    """An expected failure the user fixes (a path, a config value, a busy journal): exit 2, the message is the line."""

    exit_status = EXIT_USAGE


class DataError(StageError):
    """The data failed (every row for one reason, --strict on a bad row, nothing to export): exit 1."""

    exit_status = EXIT_DATA


@dataclass(frozen=True)
class Paths:
    """What a stage reads and writes, for `preflight` (checked before any work) and `distill run`'s fingerprint."""

    reads: Iterable = ()  # files or folders that must exist and be readable (None entries are skipped)
    read_files: Iterable = ()  # ... that must be files
    writes: Iterable = ()  # files to be written (their folder is created)
    write_dirs: Iterable = ()  # folders to be written into (created)


def _no_paths(*configs) -> Paths:
    return Paths()


@dataclass(frozen=True)
class Stage:
    """A verb's declaration. `run(*configs)` (with `held=` when `hold` is set) does the work and returns the summary
    (`summary` schema) or None; it raises `StageError` / `DataError` for expected failures, never prints-and-exits."""

    name: str
    configs: tuple[type, ...]
    run: Callable[..., dict | None]
    output: str | None = None  # the first config's field naming the main output (file or folder); None: no files
    writes: str = ""  # for --help: what lands where, beside the main output
    paths: Callable[..., Paths] = _no_paths  # (*configs) -> what preflight checks
    check: Callable[..., None] | None = None  # cheap checks before any file is written (a named env var is set)
    hold: Callable[..., object] | None = None  # (*configs) -> a context manager entered before the config is written
    dry: Callable[..., bool] = field(default=lambda *c: False)  # (*configs) -> True: writes no file (a dry run)
    publish: Callable[..., None] | None = None  # (summary, *configs): after the summary is written (a Hub push)
    verdict: Callable[[dict], str | None] | None = None  # summary -> the data failure's one line (exit 1), or None

    def main(self, *configs) -> int:
        """Run the stage under the contract; the exit status (`EXIT_STATUSES`)."""
        return boundary(self.name, lambda: self._main(configs))

    def _main(self, configs: tuple) -> int:
        start = time.monotonic()
        dry = self.dry(*configs)
        out = None if dry or not self.output else getattr(configs[0], self.output)
        io = self.paths(*configs)
        preflight(io.reads, io.read_files, [] if dry else io.writes, [] if dry else io.write_dirs)
        if self.check:
            self.check(*configs)
        config_path, summary_path = contract_paths(out) if out else (None, None)
        writer = _rank_zero()
        with self.hold(*configs) if self.hold else nullcontext() as held:
            if config_path and writer:
                from distill.configs import save_resolved_config

                save_resolved_config(config_path, *configs)
            result = self.run(*configs, held=held) if self.hold else self.run(*configs)
        if result is None:
            return EXIT_OK
        result.setdefault("seconds", round(time.monotonic() - start, 3))
        if summary_path and writer:
            from distill.io import write_json_atomic

            write_json_atomic(summary_path, result)
        if self.publish and writer:
            self.publish(result, *configs)
        if self.verdict and (line := self.verdict(result)):
            raise DataError(line)
        return EXIT_OK


def _rank_zero() -> bool:
    """True unless this is a non-zero rank of a multi-process launch (accelerate / torchrun set RANK)."""
    return os.environ.get("RANK", "0") in ("", "0")


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


def every_row_dropped(s: dict) -> str | None:
    """A `verdict` (score, filter): rows came in, none came out, and all were dropped for one reason."""
    if s["rows_in"] and not s["rows_out"] and len(s["dropped"]) == 1:
        line = next((p["line"] for p in s["problems"] if p.get("line") is not None), None)
        where = f" (e.g. line {line})" if line else ""
        return f"every row was dropped for one reason: {next(iter(s['dropped']))}{where}"
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
    if hint := missing_extra(e):  # an optional package this install lacks: name the extra that brings it
        return hint
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
    """Run `fn`; expected failures become `distill <verb>: error: ...` on stderr and their `EXIT_STATUSES` code."""
    try:
        return int(fn() or 0)
    except KeyboardInterrupt as e:  # Ctrl-C, or a signal a stage turned into one (`distill run`: SIGTERM, 143)
        print(f"distill {verb}: {e or 'interrupted'}", file=sys.stderr)
        return getattr(e, "exit_status", EXIT_INTERRUPTED)
    except Exception as e:
        line = error_line(e)
        if line is None:
            raise
        print(f"distill {verb}: error: {redact_url(line)}", file=sys.stderr)
        return getattr(e, "exit_status", EXIT_USAGE)


def die_with_parent() -> None:
    """`preexec_fn` for children `distill run` owns: SIGTERM when their parent dies, even by SIGKILL (Linux
    PR_SET_PDEATHSIG; elsewhere a no-op), so no stage or teacher outlives the run."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass

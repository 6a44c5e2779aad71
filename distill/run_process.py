"""How `distill run` owns its children: each stage (and the local teacher) in its own process group, its output teed
to our stdout and its log, and the whole group stopped on SIGTERM / SIGINT or any error, so nothing outlives the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from distill.stage import die_with_parent


class Stopped(KeyboardInterrupt):
    """SIGTERM / SIGINT reached `run`: unwinds to the cleanup that stops every child, then to the stage boundary,
    which prints the message and exits 143 (SIGTERM) or 130 (SIGINT)."""

    def __init__(self, signame: str):
        super().__init__(f"stopped by {signame}; every stage process and the local teacher were stopped")
        self.exit_status = 130 if signame == "SIGINT" else 143


def raise_stopped(signum, frame):
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not interrupt the cleanup
        signal.signal(sig, signal.SIG_IGN)
    raise Stopped(signal.Signals(signum).name)


def stop_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the child's whole process group (a launcher and its ranks), SIGKILL what is left after `grace_s`."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            os.killpg(proc.pid, 0)  # the leader is gone: are any of its group left?
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.2)


def run_teed(cmd: list[str], log_path: Path) -> int:
    """Run `cmd` in its own process group, copying its output (progress bars included, unbuffered) to our stdout and
    to `log_path`; on any exception (a signal included) the whole group is stopped before it propagates."""
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent)  # fmt: skip
        try:
            while chunk := proc.stdout.read1(1 << 14):
                log_file.write(chunk)
                log_file.flush()
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
        except BaseException:
            stop_group(proc)
            raise
        return proc.wait()

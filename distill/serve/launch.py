"""Start a local `distill serve` for a pipeline run and stop it afterwards (the embedded default teacher).

The server binds a free loopback port (`--port 0`) and prints `... listening on http://127.0.0.1:PORT/v1` once uvicorn
has started (`distill.serve.server.LISTENING`); we read that line from its log. No HTTP probe: with `--api_key_env`
in the serve args, an unauthenticated `/v1/models` answers 401 and the probe would wait until the timeout.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from pathlib import Path

from distill.serve.server import LISTENING
from distill.stage import die_with_parent

log = logging.getLogger(__name__)
_URL = re.compile(re.escape(LISTENING).encode() + rb" (http://127\.0\.0\.1:\d+/v1)")


class LocalTeacher:
    """A `distill serve` subprocess: `start()` returns self once ready; `base_url` is its OpenAI base URL."""

    def __init__(self, serve: dict, log_path: str | Path, ready_timeout_s: float = 600.0):
        unknown = set(serve) - {"models", "args"}
        if unknown or not serve.get("models"):
            raise ValueError(f"serve section needs 'models' (and optional 'args'); unknown keys: {sorted(unknown)}")
        self.cmd = [sys.executable, "-m", "distill", "serve", "--host", "127.0.0.1", "--port", "0"]
        for model in serve["models"]:
            self.cmd += ["--model", str(model)]
        self.cmd += [str(a) for a in serve.get("args", [])]
        self.log_path = Path(log_path)
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None
        self.base_url: str | None = None

    def start(self) -> LocalTeacher:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_path, "ab")
        offset = self.log_path.stat().st_size
        log.info("starting local teacher: %s (log: %s)", " ".join(self.cmd), self.log_path)
        # Its own process group: a terminal's Ctrl-C reaches `run`, which stops the stage first and the teacher last.
        self.proc = subprocess.Popen(self.cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=die_with_parent)  # fmt: skip
        deadline = time.time() + self.ready_timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"distill serve exited with {self.proc.returncode}; see {self.log_path}")
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                m = _URL.search(f.read())
            if m:
                self.base_url = m.group(1).decode()
                log.info("local teacher ready at %s", self.base_url)
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"distill serve not ready after {self.ready_timeout_s:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        log.info("local teacher stopped")


def build_tiny_vlm_once(path: str | Path) -> Path:
    """Build the kit's tiny VLM at `path` unless a complete one is already there (demo runs)."""
    path = Path(path)
    if (path / "config.json").exists() and (path / "model.safetensors").exists():
        return path
    from distill.testing.tiny import build_tiny_vlm

    log.info("building the tiny demo VLM at %s", path)
    return build_tiny_vlm(path)

"""The teacher client's settings, as one part every config that talks to an endpoint composes (generate, reason, the
llm_judge scorer's `client:`): one spelling (`base_urls`), one set of timeouts, breaker and concurrency flags, each
documented once. No secrets: only the *name* of the env var holding the key.

    from distill.client.config import ClientConfig
    ClientConfig(base_urls=["http://127.0.0.1:8000/v1"], model="teacher")

A stage config inherits `ClientFields` (flat flags, `--base_urls URL ...`) and builds its `ClientConfig` with
`client_config(self, model=..., progress=...)`. The old spelling `base_url` still works: in YAML it is read as
`base_urls` (`RENAMED`, with a warning), and on the command line argparse takes `--base_url` as its abbreviation.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from distill.urls import redact_url

RENAMED = {"base_url": "base_urls"}  # old key -> new key, read by `distill.config_types.renamed_keys`


def _f(default, help_: str):
    return field(default=default, metadata={"help": help_})


@dataclass(kw_only=True)
class ClientFields:
    """The endpoint flags shared by every stage that sends requests (see the module docstring)."""

    __renamed__ = RENAMED

    base_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:8000/v1"],
                                 metadata={"help": "OpenAI-compatible base URL(s) incl. /v1; several = load-balanced "
                                           "(the least busy gets the next request)."})  # fmt: skip
    api_key_env: str | None = _f(None, "Name of the env var holding the API key; None = no key sent.")
    max_concurrency: int = _f(64, "Requests in flight at most, across all base_urls (AIMD window shrinks on 429).")
    min_concurrency: int = _f(1, "Floor of the AIMD window after 429s.")
    timeout_s: float = _f(600.0, "Per-attempt timeout of a whole request, seconds.")
    connect_timeout_s: float = _f(10.0, "TCP/TLS connect timeout, seconds (a blackholed host fails in seconds).")
    probe_timeout_s: float = _f(15.0, "GET /models before the first request must answer (any status) within this, s.")
    breaker_failures: int = _f(
        8,
        "Stop the run after this many connection failures in a row (refused, DNS, reset), or as many read "
        "timeouts in a row when GET /models does not answer either; 0 = never.",
    )
    max_retries: int = _f(6, "Retries per request after the first attempt.")
    backoff_base_s: float = _f(1.0, "First retry waits up to this many seconds, doubling per retry (with jitter).")
    backoff_max_s: float = _f(60.0, "Cap of one backoff wait, seconds.")
    retry_after_max_s: float = _f(300.0, "Cap on a server's Retry-After, seconds.")

    def check_client(self) -> None:
        """ValueError (one line) for values the client cannot run with; base_urls normalised to a list."""
        if isinstance(self.base_urls, str):
            self.base_urls = [self.base_urls]
        self.base_urls = [u.rstrip("/") for u in self.base_urls]
        if not self.base_urls or not all(u.startswith(("http://", "https://")) for u in self.base_urls):
            raise ValueError(f"base_urls must be http(s) URLs, got {[redact_url(u) for u in self.base_urls]}")
        if self.api_key_env and any(redact_url(u) != u for u in self.base_urls):  # aiohttp refuses every request
            raise ValueError("a base URL with credentials (user:password@, sent as Basic auth) and api_key_env (a "
                             "Bearer key) both need the one Authorization header: use one of them")  # fmt: skip
        if not 1 <= self.min_concurrency <= self.max_concurrency:
            raise ValueError("need 1 <= min_concurrency <= max_concurrency")
        if self.timeout_s <= 0 or self.max_retries < 0 or self.backoff_base_s < 0:
            raise ValueError("timeout_s must be > 0, max_retries and backoff_base_s >= 0")
        if self.connect_timeout_s <= 0 or self.probe_timeout_s <= 0 or self.breaker_failures < 0:
            raise ValueError("connect_timeout_s and probe_timeout_s must be > 0, breaker_failures >= 0")


@dataclass(kw_only=True)
class ClientConfig(ClientFields):
    """What `TeacherClient` runs with: the shared fields plus the model name and the progress bar."""

    model: str
    progress: bool = True  # tqdm bar on stderr

    def __post_init__(self):
        self.check_client()
        if not self.model:
            raise ValueError("model must be set")

    def api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ValueError(f"environment variable {self.api_key_env} (api_key_env) is not set or empty")
        return key


def client_config(fields: ClientFields, **extra) -> ClientConfig:
    """The `ClientConfig` of a stage config that composes `ClientFields` (`extra`: model, progress)."""
    shared = {f.name: getattr(fields, f.name) for f in dataclasses.fields(ClientFields)}
    return ClientConfig(**shared, **extra)


def request_sampling(temperature, top_p, max_tokens, seed, sample_index: int) -> dict:
    """The sampling fields of sample `sample_index`'s request (the seed offset by the index, so samples differ and a
    rerun repeats them); unset fields are left out, so the server's defaults apply."""
    s = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
         "seed": None if seed is None else seed + sample_index}  # fmt: skip
    return {k: v for k, v in s.items() if v is not None}

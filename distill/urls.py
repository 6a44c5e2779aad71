"""Credentials never leave the process: `http://user:PW@host/v1` is used to connect as given, but every URL written or
logged (resolved configs, summaries, trace rows, error lines, log records) has its `user:password@` part removed.

    redact_url("http://user:PW@host:8000/v1")  ->  "http://host:8000/v1"
"""

from __future__ import annotations

import logging
import re

# scheme://userinfo@ ; userinfo holds no '/', '@' or whitespace (RFC 3986), so this never eats a path
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]+@")


def redact_url(url: str) -> str:
    """`url` without its `user:password@` part (any text: every URL in it)."""
    return _USERINFO.sub(r"\1", url)


def redacted(value):
    """`value` (a config dict, a summary, a list of URLs) with the credentials removed from every URL in its strings."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redacted(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """A handler filter that removes URL credentials from every record it passes (ours, aiohttp's, the SDK's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose args do not fit its format: the handler reports that, not this filter
            return True
        clean = redact_url(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def redact_logs() -> None:
    """Install `RedactingFilter` on every handler of the root logger (call after logging is configured)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())

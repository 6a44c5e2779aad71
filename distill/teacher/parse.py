"""Normalise a teacher answer into an ECR trace `{raw, think, final}`.

Teachers return reasoning in three shapes, all accepted:
- a separate `reasoning_content` field (vLLM/SGLang reasoning parsers, DeepSeek-style APIs) beside `content`;
- `<think> ... </think> final` inside `content`;
- `... </think> final` with the opening tag missing (chat templates that put `<think>` in the prompt).
Anything else is all `final` with an empty `think`. An unclosed `<think>` (a truncated answer) is all `think`.
`raw` is always kept exactly as received, so a better parser can be re-run over the journal without new requests.
"""

from __future__ import annotations

import re

from distill.client.driver import raw_text

_OPEN = re.compile(r"<think>", re.IGNORECASE)
_CLOSE = re.compile(r"</think>", re.IGNORECASE)


def parse_trace(content: str | None, reasoning_content: str | None = None) -> dict:
    """{"raw", "think", "final"} from a chat completion message's `content` and optional `reasoning_content`."""
    content = content or ""
    if reasoning_content:
        inner = (
            parse_trace(content) if _CLOSE.search(content) else {"think": "", "final": _OPEN.sub("", content).strip()}
        )
        think = "\n".join(t for t in (reasoning_content.strip(), inner["think"]) if t)
        return {"raw": raw_text(content, reasoning_content), "think": think, "final": inner["final"]}
    close = _CLOSE.search(content)
    if close is None:
        opened = _OPEN.search(content)
        if opened is None:
            return {"raw": content, "think": "", "final": content.strip()}
        return {"raw": content, "think": content[opened.end() :].strip(), "final": ""}
    before, after = content[: close.start()], content[close.end() :]
    opened = _OPEN.search(before)
    think = before[opened.end() :] if opened else before
    return {"raw": content, "think": think.strip(), "final": _CLOSE.sub("", _OPEN.sub("", after)).strip()}

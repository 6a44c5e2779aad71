"""Drive a batch of keyed requests through the client and the journal, with a progress bar: shared by `generate`,
`reason` (openai backend) and `complete_many` (the llm_judge scorer).

    failures, stats = drive(client_config, journal, [(key, body_or_factory), ...], desc="generate")

Keys already journaled are skipped (resume); duplicate keys are sent once. Each ok/truncated answer is journaled
(flushed) the moment it arrives; failures come back in `failures` (key -> result with `error`) and are not journaled.
A teacher that is not there (probe fails, or the client's circuit breaker trips) raises
`distill.client.http.TeacherUnreachable` after the answers received so far are journaled.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from distill.client.http import ClientConfig, TeacherClient
from distill.client.journal import Journal, request_key


def _keyed(messages: list[dict]) -> list[dict]:
    """Messages with base64 data URLs replaced by the sha256 of the URL, so keys never hold image bytes."""
    out = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, list):
            c = [  # image_url parts, and video_url parts (a video's frames, distill.image_store)
                {**p, kind: {"url": "data-sha256:" + hashlib.sha256(p[kind]["url"].encode()).hexdigest()}}
                if (kind := p.get("type")) in ("image_url", "video_url")
                and str(p.get(kind, {}).get("url", "")).startswith("data:")
                else p
                for p in c
            ]
        out.append({**m, "content": c})
    return out


def journal_key(model: str, messages: list[dict], sampling: dict, sample_index: int = 0) -> str:
    """`request_key` for already materialised messages (data URLs hashed first)."""
    return request_key(model, _keyed(messages), sampling, sample_index)


def drive(config: ClientConfig, journal: Journal, items: list[tuple[str, dict | Callable[[], dict]]], desc: str):
    """Send what the journal lacks; returns (failures {key: result}, stats dict)."""
    seen: set[str] = set()
    todo, journaled = [], 0
    for key, body in items:
        if key in journal:  # answered by an earlier run, or (same content) by an earlier call of this run
            journaled += journal.from_before(key)
        elif key not in seen:
            seen.add(key)
            todo.append((key, body))
    stats = {"to_send": len(todo), "journaled_before": journaled, "same_content": len(items) - len(todo) - journaled,
             "ok": 0, "truncated": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0, "retries": 0,
             "concurrency_decreases": 0}  # fmt: skip
    failures: dict[str, dict] = {}
    if not todo:
        return failures, stats
    bar = tqdm(total=len(todo), desc=desc, unit="req", dynamic_ncols=True, disable=not config.progress, mininterval=0.5)
    start, last = time.monotonic(), 0.0

    def on_result(key: str, result: dict) -> None:
        nonlocal last
        status = result["status"]
        stats[status] += 1
        stats["prompt_tokens"] += result["usage"]["prompt_tokens"]
        stats["completion_tokens"] += result["usage"]["completion_tokens"]
        if status == "failed":
            failures[key] = result
        else:
            journal.put(key, {k: result[k] for k in ("status", "model", "content", "reasoning_content",
                                                     "finish_reason", "usage")})  # fmt: skip
        bar.update(1)
        now = time.monotonic()
        if now - last > 0.5:
            last = now
            tok_s = (stats["prompt_tokens"] + stats["completion_tokens"]) / max(now - start, 1e-9)
            bar.set_postfix(done=stats["ok"] + stats["truncated"], failed=stats["failed"], tok_s=f"{tok_s:.0f}",
                            refresh=False)  # fmt: skip

    async def main():
        async with TeacherClient(config) as client:
            await client.probe()  # a teacher that is not there fails here in seconds, before any row is tried
            await client.run(todo, on_result)
            stats["retries"] = client.retries
            stats["concurrency_decreases"] = client.limiter.decreases

    try:
        asyncio.run(main())
    finally:
        bar.close()
    stats["elapsed_s"] = round(time.monotonic() - start, 3)
    return failures, stats


def raw_text(content: str | None, reasoning_content: str | None) -> str:
    """The raw trace exactly as kept: a separate `reasoning_content` is put back inside `<think>` tags before `content`."""
    return f"<think>{reasoning_content}</think>{content or ''}" if reasoning_content else (content or "")


def complete_many(requests: list[dict], config: ClientConfig, journal_path: str | Path) -> list[dict]:
    """Synchronous batch for callers such as the llm_judge scorer, through the same content-keyed journal.

    requests: [{"messages": [...OpenAI messages...], "sampling": {...}, optional "model", optional "sample_index"}]
    returns, in the same order: [{"status": "ok"|"truncated"|"failed", "text": str|None, "error": str|None,
    "usage": {"prompt_tokens", "completion_tokens"}}]. Journaled answers are never re-sent; failures are not
    journaled (a rerun retries them). Identical requests are sent once.
    """
    keyed = [journal_key(r.get("model") or config.model, r["messages"], dict(r.get("sampling") or {}),
                         int(r.get("sample_index", 0))) for r in requests]  # fmt: skip
    bodies = {
        key: {"model": r.get("model") or config.model, "messages": r["messages"], **(r.get("sampling") or {})}
        for key, r in zip(keyed, requests, strict=True)
    }
    with Journal(journal_path) as journal:
        failures, _ = drive(config, journal, list(bodies.items()), desc="complete_many")
        records = {key: failures.get(key) or journal.get(key) for key in bodies}
    out = []
    for key in keyed:
        rec = records[key]
        text = rec.get("content")
        if rec.get("reasoning_content") and rec["status"] != "failed":  # the raw trace exactly as generate keeps it
            text = raw_text(text, rec["reasoning_content"])
        out.append({"status": rec["status"], "text": text, "error": rec.get("error"), "usage": rec.get("usage") or {}})
    return out

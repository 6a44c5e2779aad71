"""Label-mask audit, run on real collated batches before training step 1.

For each audited row it assigns every token a role (system, user, assistant_header, assistant, image, pad) and checks:
- no image, pad, system, user or assistant-header token carries a label (hard error);
- the supervised tokens decode to exactly the assistant turns as the chat template renders them (hard error);
- every row has at least one supervised token (hard error).
It reports the supervised fraction per role. Roles come from the chat template itself: message k spans the tokens
between the renderings of messages[:k] and messages[:k+1], and an assistant turn's header ends where the rendering of
messages[:k] with the generation prompt ends. A default system prompt the template injects before the first message
(Qwen's "You are a helpful assistant.") is split off as `system` on ChatML templates (`<|im_start|>` headers).
"""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger(__name__)
FORBIDDEN = ("system", "user", "assistant_header", "image", "pad")


class LabelMaskError(RuntimeError):
    """The collator's labels supervise tokens other than the assistant turns; training must not start."""


def _render(processor, messages, chat_template, gen_prompt=False) -> str:
    return processor.apply_chat_template(
        messages, chat_template=chat_template, tokenize=False, add_generation_prompt=gen_prompt
    )


def _n_tokens(processor, messages, images, chat_template, gen_prompt=False, videos=()) -> int:
    from distill.chat_format import tokenize_messages

    if not messages:
        return 0
    # a row's images and video sit in its first user turn, so a prefix holds them all once it has a user turn
    has_user = any(m["role"] == "user" for m in messages)
    ids = tokenize_messages(processor, messages, list(images) if has_user else [], chat_template, gen_prompt,
                            videos=list(videos) if has_user else [])  # fmt: skip
    return len(ids["input_ids"][0])


def row_roles(processor, row: dict, chat_template: str | None) -> tuple[list[str], str]:
    """(role per token of the unpadded row, expected supervised text = the assistant turns as rendered)."""
    messages, images, videos = row["messages"], row["images"], row.get("videos") or []
    roles: list[str] = []
    expected = ""
    for k, m in enumerate(messages):
        start, end = len(roles), _n_tokens(processor, messages[: k + 1], images, chat_template, videos=videos)
        if m["role"] == "assistant":
            header_end = _n_tokens(processor, messages[:k], images, chat_template, gen_prompt=True, videos=videos)
            roles += ["assistant_header"] * (header_end - start) + ["assistant"] * (end - header_end)
            full = _render(processor, messages[: k + 1], chat_template)
            expected += full[len(_render(processor, messages[:k], chat_template, gen_prompt=True)) :]
        else:
            roles += [m["role"]] * (end - start)
    return roles, expected


def _split_injected_system(roles: list[str], ids: list[int], first_role: str, im_start: int | None) -> None:
    if first_role == "system" or im_start is None:
        return
    starts = [i for i, t in enumerate(ids) if t == im_start]
    if len(starts) >= 2 and all(r == first_role for r in roles[: starts[1]]):
        roles[: starts[1]] = ["system"] * starts[1]


def audit_batch(processor, batch: dict, rows: list[dict], chat_template: str | None) -> dict:
    """Audit one collated batch against its source rows; returns per-role counts and the decoded texts."""
    tok = processor.tokenizer
    special = {getattr(processor, "image_token_id", None), getattr(processor, "video_token_id", None)} - {None}
    im_start = tok.convert_tokens_to_ids("<|im_start|>") if "<|im_start|>" in tok.get_vocab() else None
    counts: dict[str, Counter] = {"tokens": Counter(), "supervised": Counter()}
    texts = []
    for i, row in enumerate(rows):
        ids = batch["input_ids"][i].tolist()
        labels = batch["labels"][i].tolist()
        attn = batch["attention_mask"][i].tolist()
        roles, expected = row_roles(processor, row, chat_template)
        n_real = sum(attn)
        if n_real != len(roles):
            raise LabelMaskError(f"row {row.get('id')}: collated row has {n_real} tokens, the template {len(roles)}")
        real_ids = [t for t, a in zip(ids, attn, strict=True) if a]
        _split_injected_system(roles, real_ids, row["messages"][0]["role"], im_start)
        # TRL pads on the right: the real tokens are the first n_real positions, in template order
        full_roles = ["pad"] * len(ids)
        for j, role in zip((j for j, a in enumerate(attn) if a), roles, strict=True):
            full_roles[j] = "image" if ids[j] in special else role
        sup = [j for j, lab in enumerate(labels) if lab != -100]
        counts["tokens"].update(full_roles)
        counts["supervised"].update(full_roles[j] for j in sup)
        bad = Counter(full_roles[j] for j in sup if full_roles[j] in FORBIDDEN)
        if bad:
            raise LabelMaskError(
                f"row {row.get('id')}: labels supervise non-assistant tokens {dict(bad)}; training would learn the "
                "prompt. Set assistant_only_loss: true and use a chat template with {% generation %} markers."
            )
        if not sup:
            raise LabelMaskError(f"row {row.get('id')}: no supervised token (assistant turn missing or truncated)")
        got = tok.decode([ids[j] for j in sup], skip_special_tokens=False)
        if got != expected:
            raise LabelMaskError(f"row {row.get('id')}: supervised text {got!r} != assistant turn {expected!r}")
        texts.append({"id": row.get("id"), "supervised_text": got})
    return {"counts": counts, "texts": texts}


def audit(collator, processor, rows: list[dict], chat_template: str | None, batch_size: int) -> dict:
    """Collate `rows` in batches (padding included) and audit them; raises LabelMaskError. Returns the report."""
    total: dict[str, Counter] = {"tokens": Counter(), "supervised": Counter()}
    texts = []
    for b in range(0, len(rows), batch_size):
        chunk = rows[b : b + batch_size]
        result = audit_batch(processor, collator([dict(r) for r in chunk]), chunk, chat_template)
        for k in total:
            total[k].update(result["counts"][k])
        texts += result["texts"]
    fraction = {r: total["supervised"][r] / n for r, n in total["tokens"].items() if n}
    report = {"rows": len(rows), "tokens_per_role": dict(total["tokens"]), "supervised_per_role": dict(
        total["supervised"]), "supervised_fraction_per_role": fraction, "examples": texts[:3]}  # fmt: skip
    log.info("label audit OK on %d rows; supervised fraction per role: %s", len(rows),
             {k: round(v, 3) for k, v in fraction.items()})  # fmt: skip
    for t in texts[:2]:
        log.info("label audit: row %s supervised text == assistant turn: %r", t["id"], t["supervised_text"])
    return report

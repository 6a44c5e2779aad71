"""`distill generate --dry_run`: what a real run would send (requests, approximate prompt tokens, cost); sends and
writes nothing.

    distill generate --config recipes/qwen2vl-2b/generate.yaml --dry_run true --price_input_per_mtok 2.5
"""

from __future__ import annotations

import logging

from distill.images import ImageError
from distill.teacher.generate_config import GenerateConfig
from distill.teacher.prompts import ImageStore, approx_prompt_tokens

log = logging.getLogger(__name__)


def dry_run(config: GenerateConfig, chunks, store: ImageStore, journaled: set[str]) -> dict:
    """Print (and return) what a real run would send; sends nothing and writes nothing. `chunks` yields lists of plan
    entries, so only one chunk's prompts are in memory (and the distinct keys)."""
    seen: set[str] = set()
    n_todo = tokens = unreadable = n_journaled = n_keyed = n_entries = 0
    for entries in chunks:
        for e in entries:
            n_entries += 1
            if "key" not in e:
                continue
            n_keyed += 1
            if e["key"] in journaled:
                n_journaled += 1
            elif e["key"] not in seen:
                seen.add(e["key"])
                try:  # an image that cannot be read fails its row in a real run, and nothing is sent for it
                    tokens += approx_prompt_tokens(e["rendered"], store)
                    n_todo += 1
                except ImageError as err:
                    log.warning("%s: %s", e["example"]["id"], err)
                    unreadable += 1
    info = {"requests": n_todo, "journaled": n_journaled, "same_content": n_keyed - n_journaled - len(seen),
            "unreadable_input": n_entries - n_keyed + unreadable, "approx_prompt_tokens": tokens}  # fmt: skip
    print(f"dry run: {n_todo} requests to send ({n_journaled} already journaled, {info['same_content']} same-content, "
          f"{info['unreadable_input']} with unreadable images), ~{tokens} prompt tokens, "
          f"at most {n_todo * config.max_tokens} completion tokens")  # fmt: skip
    if config.price_input_per_mtok is not None:
        discount = config.batch_discount if config.batch else 1.0  # batch APIs bill the same tokens at a discount
        cost = tokens / 1e6 * config.price_input_per_mtok * discount
        info["cost_prompt_usd"] = round(cost, 4)
        line = f"cost: ${cost:.4f} for prompts"
        if config.price_output_per_mtok is not None:
            worst = cost + n_todo * config.max_tokens / 1e6 * config.price_output_per_mtok * discount
            info["cost_upper_bound_usd"] = round(worst, 4)
            line += f", at most ${worst:.4f} in all (every completion at max_tokens)"
        if config.batch:
            line += f" at the batch price ({discount:g} x online: ${cost / discount:.4f} for prompts online)"
            info["batch_discount"] = discount
        print(line)
    return info

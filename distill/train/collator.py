"""TRL's vision-language collator, given the student's chat format for videos and interleaved images.

TRL's `DataCollatorForVisionLanguageModeling` puts every row's images before its first user text and knows no
videos. Rows exported with a video (`videos`: lists of frames) or with `<|image_N|>` markers in the user text are
first put into structured form by `distill.chat_format.multimodal_messages` (the function pre-flight, the label audit
and `distill reason` use too), then TRL's own collation runs unchanged: chat template, the processor's image and
video paths (Qwen2-VL: `pixel_values_videos`, `video_grid_thw`), assistant-only labels, padding.
Rows without videos or markers pass through untouched, so image rows collate exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling


@dataclass
class DistillVisionCollator(DataCollatorForVisionLanguageModeling):
    @classmethod
    def like(cls, collator: DataCollatorForVisionLanguageModeling) -> DistillVisionCollator:
        """The same settings as the collator SFTTrainer built (processor, max_length, chat template, ...)."""
        return cls(**{f.name: getattr(collator, f.name) for f in fields(collator) if f.init})

    def _collate_language_modeling(self, examples: list[dict]) -> dict:
        from distill.chat_format import multimodal_messages

        prepared = []
        for ex in examples:
            videos = ex.get("videos") or []
            if "messages" in ex and (videos or multimodal_needed(ex["messages"])):
                images = ex.get("images") or []
                ex = {**ex, "messages": multimodal_messages(ex["messages"], images, videos), "images": []}
            prepared.append({k: v for k, v in ex.items() if k != "videos"})
        return super()._collate_language_modeling(prepared)


def multimodal_needed(messages: list[dict]) -> bool:
    """Whether a row's user text places images with `<|image_N|>` markers (interleaved images)."""
    from distill.data.mmeb import IMAGE_PLACEHOLDER

    return any(m["role"] == "user" and isinstance(m["content"], str) and IMAGE_PLACEHOLDER.search(m["content"])
               for m in messages)  # fmt: skip

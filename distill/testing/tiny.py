"""Tiny random-weight Qwen2-VL / Qwen2.5-VL checkpoints built offline, for tests and the CPU demo.

    python -m distill.testing.tiny /tmp/tiny-qwen2vl [--family qwen2_5_vl | llava]

`build_tiny_vlm(path)` trains a ~400-token byte-level BPE tokenizer in-process (Qwen special tokens included),
builds a ~190k-parameter model and saves model, tokenizer, image processor and chat template to `path`, so every stage
loads it with `from_pretrained(path)` (processor: `distill.processing.load_processor(path)`) exactly like a real one.
A 56x56 image becomes 16 patches -> 4 image tokens (min_pixels=28*28*4, max_pixels=28*28*16).

`--family llava`: a LLaVA-architecture VLM (tiny CLIP vision tower + projector + the same Qwen2 text model and chat
template). Why a second family: stock `AutoProcessor` for Qwen2-VL needs torchvision (its video processor), which does
not import beside the CPU torch pin, while `LlavaProcessor` loads with the PIL CLIP image processor. So the stock-tools
tests (`trl sft` CLI, `AutoProcessor` from another directory) run on every install with this family, and with the
Qwen2-VL family too where torchvision imports (`torchvision_imports`; CI's requirements-torchvision.lock step). Every
image becomes 28x28 (resize + centre crop) -> 4 patches -> 4 image tokens.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
TINY_MIN_PIXELS = 28 * 28 * 4
TINY_MAX_PIXELS = 28 * 28 * 16

# Text the tokenizer is trained on: chat-template words plus the demo's vocabulary, so encodings stay short.
_CORPUS = [
    "system user assistant You are a helpful assistant. <think> </think> Answer: The answer is",
    "Represent the given image with the following question: How many shapes are in the image? What color is the",
    "circle square triangle red green blue yellow white background image caption describing everyday object",
    "Find me an everyday image that matches the given caption: Select the portion of the image that isolates",
    "classification retrieval grounding question reasoning step first then final label left right top bottom",
    "0 1 2 3 4 5 6 7 8 9 one two three four a an the of and is in on with for to it this that",
]


def torchvision_imports() -> bool:
    """Does torchvision import here? Not beside the CPU torch pin (`operator torchvision::nms does not exist`, a
    RuntimeError, not an ImportError); yes with requirements-torchvision.lock. Tests of the stock Qwen2-VL processors
    run only where it does."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


def chat_template(name: str = "qwen2_5_vl") -> str:
    """TRL's copy of the Qwen2.5-VL chat template (identical to Qwen2-VL's); `name + '_training'` for the variant
    with generation markers used for assistant-only loss."""
    return (resources.files("trl") / "chat_templates" / f"{name}.jinja").read_text()


def build_tokenizer(vocab_size: int = 400):
    """A byte-level BPE `Qwen2Tokenizer` trained in-process (no downloads)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    model = bpe.to_str()
    import json

    spec = json.loads(model)["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["merges"]]  # tuples, not "a b"
    # Keep the special tokens in the vocab at the ids the trainer gave them: dropping them would let the added
    # specials take ids already used by ordinary merges (e.g. "user" decoding as <|vision_start|>).
    vocab = dict(spec["vocab"])
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    tok.chat_template = chat_template()
    return tok


def tiny_config(tokenizer, family: str = "qwen2_vl"):
    """A ~190k-parameter Qwen2-VL (or Qwen2.5-VL) config whose token ids match `tokenizer`."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        # mrope_section must sum to head_dim / 2 = 64 / 4 / 2 = 8
        rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]},
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    common = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=None,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
    )
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)  # fmt: skip
        return Qwen2VLConfig(text_config=text, vision_config=vision, **common)
    if family == "llava":
        from transformers import LlavaConfig

        vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, image_size=28, patch_size=14, projection_dim=32)  # fmt: skip
        # Qwen2 text model; the image placeholder is Qwen's <|image_pad|>, so the Qwen chat template is used as is
        return LlavaConfig(vision_config=vision, text_config={**text, "model_type": "qwen2", "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}, image_seq_length=4,
                           vision_feature_select_strategy="default", vision_feature_layer=-1,
                           **{k: v for k, v in common.items() if k in ("image_token_id", "tie_word_embeddings")})  # fmt: skip
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[0])  # fmt: skip
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
    raise ValueError(f"unknown family {family!r} (qwen2_vl | qwen2_5_vl | llava)")


def build_tiny_vlm(path: str | Path, family: str = "qwen2_vl", seed: int = 0) -> Path:
    """Build and save a tiny random VLM + tokenizer + image processor + chat template to `path`; returns the path."""
    import torch
    from transformers import AutoModelForImageTextToText
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from distill.processing import STOCK_CLASSES, ImageOnlyQwen2VLProcessor

    path = Path(path)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(tiny_config(tokenizer, family))
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if family == "llava":
        from transformers import CLIPImageProcessor, LlavaProcessor

        image_processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
        processor = LlavaProcessor(image_processor, tokenizer, patch_size=14, vision_feature_select_strategy="default",
                                   image_token="<|image_pad|>", num_additional_image_tokens=1,  # CLIP's CLS token
                                   chat_template=tokenizer.chat_template)  # fmt: skip
    else:
        image_processor = Qwen2VLImageProcessorPil(min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS)
        # saved under the stock class names (Qwen2VLProcessor, ...), like a hub checkpoint
        processor = ImageOnlyQwen2VLProcessor(image_processor, tokenizer, chat_template=tokenizer.chat_template,
                                              stock_class=STOCK_CLASSES[family])  # fmt: skip
    model.save_pretrained(path)
    processor.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path")
    ap.add_argument("--family", default="qwen2_vl", choices=["qwen2_vl", "qwen2_5_vl", "llava"])
    args = ap.parse_args()
    print(build_tiny_vlm(args.path, args.family))


if __name__ == "__main__":
    main()

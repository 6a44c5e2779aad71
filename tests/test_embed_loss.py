"""The losses `distill embed` trains with: MultipleNegativesRankingLoss(scale=50) is TTE's InfoNCE at τ = 0.02 (checked
against the formula computed by hand), and GradCache (CachedMultipleNegativesRankingLoss) gives the same gradients
as the plain loss on a tiny model."""

import pytest
import torch

from distill.embed.config import EmbedConfig
from distill.embed.stage import _loss

QUERIES = ["How many shapes?\nvier", "What colour is the square?\nrot", "Which shape?\nKreis", "Caption?\nblau Dreieck"]
POSITIVES = ["4", "red", "circle", "An image of a blue triangle."]
NEGATIVES = ["2", "green", "square", "An image of a red circle."]


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory):
    """A tiny random BERT with MiniLM's tokenizer as Transformer -> mean Pooling -> Normalize (built offline)."""
    from distill.testing.tiny_embedder import build_tiny_text_embedder

    return build_tiny_text_embedder(tmp_path_factory.mktemp("tiny_bert"))


def _features(model, *columns):
    return [model.preprocess(list(c)) for c in columns]


def _config(tmp_path, **kw):
    return EmbedConfig(output_dir=str(tmp_path), input=["x"], **kw)


def test_mnrl_is_infonce_at_tau_002(tiny_st, tmp_path):
    loss = _loss(tiny_st, _config(tmp_path))
    assert loss.scale == pytest.approx(50.0)
    got = loss(_features(tiny_st, QUERIES, POSITIVES, NEGATIVES), None)
    with torch.no_grad():
        q, p, n = (tiny_st.encode(c, convert_to_tensor=True) for c in (QUERIES, POSITIVES, NEGATIVES))
    cands = torch.cat([p, n])  # in-batch positives, then every row's hard negative
    sims = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(cands, dim=-1).T
    logits = sims / 0.02
    by_hand = -(logits.diag() - torch.logsumexp(logits, dim=1)).mean()  # -log softmax of the own positive
    assert got.item() == pytest.approx(by_hand.item(), rel=1e-4, abs=1e-5)


def test_gradcache_gradients_equal_the_plain_loss(tiny_st, tmp_path):
    tiny_st.train()  # dropout is off in the tiny config, so both losses see the same function
    grads = []
    for kw in ({}, {"loss": "CachedMultipleNegativesRankingLoss", "mini_batch_size": 1}):
        tiny_st.zero_grad()
        loss = _loss(tiny_st, _config(tmp_path, **kw))
        value = loss(_features(tiny_st, QUERIES, POSITIVES, NEGATIVES), None)
        value.backward()
        grads.append((value.item(), {n: p.grad.clone() for n, p in tiny_st.named_parameters() if p.grad is not None}))
    (plain, g_plain), (cached, g_cached) = grads
    assert plain == pytest.approx(cached, rel=1e-5) and g_plain.keys() == g_cached.keys() and len(g_plain) > 10
    for name, g in g_plain.items():
        scale = g.abs().max().item()  # float32 sums in another order: compare relative to the gradient's size
        assert torch.allclose(g, g_cached[name], rtol=1e-4, atol=1e-5 * scale + 1e-8), name
    assert any(g.abs().sum() > 0 for g in g_plain.values())

"""A trained embedder (a `distill embed` output, or any sentence-transformers model) as `distill eval` and
`embedding_gain` use embedders: `uses_images` and `embed(items) -> unit vectors`, reading each item exactly as the
trainer did (`distill.embed.model.InputMaker`: text for a text model, a chat message with the images first for a VLM).

    emb = TrainedEmbedder("runs/demo/embed", image_root="data/demo")
    vectors = emb.embed([query_item(row, emb.uses_images)])
"""

from __future__ import annotations

import logging

import numpy as np

from distill.embed.model import InputMaker, load_embedder, uses_images

log = logging.getLogger(__name__)


class TrainedEmbedder:
    """Holds the loaded model (hence a class)."""

    def __init__(self, path: str, image_root: str = ".", batch_size: int = 32, device: str | None = None):
        self.model = load_embedder(path, device=device)
        self.uses_images = uses_images(self.model)
        self.make = InputMaker(self.uses_images, image_root)
        self.batch_size = batch_size

    def embed(self, items: list) -> np.ndarray:
        """Unit vectors in item order; an item whose image cannot be read gets a NaN row (logged), as the VLM
        embedder of `embedding_gain` does, so one bad image does not end a run."""
        from distill.images import ImageError

        inputs, ok = [], []
        for i, item in enumerate(items):
            try:
                inputs.append(self.make({"text": item[0], "images": list(item[1])}))
                ok.append(i)
            except ImageError as e:
                log.warning("trained embedder: %s (rows using this image get None)", e)
        vectors = self.model.encode(inputs, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=len(inputs) >= 10_000)  # fmt: skip
        out = np.full((len(items), vectors.shape[1] if len(vectors) else 1), np.nan, np.float32)
        out[ok] = vectors
        return out

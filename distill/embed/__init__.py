"""`distill embed`: train the trace-conditioned embedder (see distill.embed.stage)."""

"""`distill eval`: trace quality and retrieval, trace sets side by side (see distill.eval.stage)."""

"""`distill train`: SFT of the student reasoner on an export (see `distill.train.sft`)."""

"""distill: collect embedding-centric reasoning traces from a teacher MLLM, keep the good ones, finetune a student."""

__version__ = "0.1.0"

"""Shared fixtures: offline everything, the demo data, a tiny VLM built once per session."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one torch thread each, in the
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # tests and their subprocesses, or the workers oversubscribe them

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return DEMO


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    """A tiny random Qwen2-VL saved like a real checkpoint (model, tokenizer, image processor, chat template)."""
    from distill.testing.tiny import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "qwen2vl")


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    """A tiny random LLaVA-architecture VLM: its stock processor loads without torchvision (distill.testing.tiny)."""
    from distill.testing.tiny import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "llava", family="llava")


@pytest.fixture
def fake_teacher():
    """Start fault-injecting OpenAI-compatible servers: `server, base_url = fake_teacher(**FakeOpenAI kwargs)`;
    all stopped at teardown."""
    from distill.testing.fake_openai import FakeOpenAI

    servers = []

    def start(**kw):
        s = FakeOpenAI(**kw)
        servers.append(s)
        return s, s.start()

    yield start
    for s in servers:
        s.stop()

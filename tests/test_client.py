import asyncio
import socket

import openai
import orjson
import pytest

from distill.client.driver import complete_many
from distill.client.http import ClientConfig, TeacherClient, parse_response, retry_after_s
from distill.client.limiter import AdaptiveLimiter


def cfg(urls, **kw) -> ClientConfig:
    kw = {"max_concurrency": 8, "timeout_s": 0.5, "max_retries": 5, "backoff_base_s": 0.01, "progress": False, **kw}
    return ClientConfig(base_urls=urls if isinstance(urls, list) else [urls], model="m", **kw)


def body(i: int) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": 8}


def run_all(config, n, sleeps=None):
    async def main():
        async with TeacherClient(config) as c:
            if sleeps is not None:

                async def record(d):
                    sleeps.append(d)

                c._sleep = record
            res = {}
            await c.run([(f"k{i}", body(i)) for i in range(n)], res.__setitem__)
            return res, c

    return asyncio.run(main())


def test_faults_end_complete_or_failed_with_reason(fake_teacher):
    server, url = fake_teacher(fault_rate=0.5, stall_s=1.0)
    res, client = run_all(cfg(url, max_retries=1), 80)
    assert sorted(res) == sorted(f"k{i}" for i in range(80))  # nothing lost
    assert set(server.fault_counts) == {"429", "500", "503", "stall", "drop", "bad_json", "empty_choices", "length"}
    failed = [r for r in res.values() if r["status"] == "failed"]
    assert failed and all(r["error"].startswith("failed after 2 attempt(s): ") for r in failed)
    assert {r["status"] for r in res.values()} == {"ok", "truncated", "failed"}
    assert all(r["finish_reason"] == "length" for r in res.values() if r["status"] == "truncated")


@pytest.mark.parametrize(
    "fault, retry_after, check",
    [
        ("429", "7", lambda d, i: 7.0 <= d <= 7.0 * 1.2),  # Retry-After honoured (with up to 20% jitter)
        ("503", "2", lambda d, i: 2.0 <= d <= 2.4),
        ("500", "0", lambda d, i: 0.5 * 2**i <= d <= 2**i),  # no Retry-After on 500: exponential, full jitter
    ],
)
def test_backoff_delays(fake_teacher, fault, retry_after, check):
    server, url = fake_teacher(fault_rate=1.0, faults=(fault,), retry_after=retry_after)
    sleeps = []
    res, client = run_all(cfg(url, max_retries=3, backoff_base_s=1.0, max_concurrency=1), 1, sleeps)
    assert res["k0"]["status"] == "failed" and f"HTTP {fault}" in res["k0"]["error"]
    assert len(sleeps) == 3 and all(check(d, i) for i, d in enumerate(sleeps)), sleeps
    assert len(server.seen_keys) == 4
    assert client.limiter.decreases == (4 if fault == "429" else 0)  # each 429 (one per window here) shrinks it


def test_client_errors_are_not_retried(fake_teacher):
    server, url = fake_teacher(status=400)
    res, _ = run_all(cfg(url), 1)
    assert res["k0"]["status"] == "failed" and "HTTP 400" in res["k0"]["error"] and res["k0"]["attempts"] == 1
    assert len(server.seen_keys) == 1


def test_aimd_window_halves_once_per_window_and_recovers():
    lim = AdaptiveLimiter(8, 1)
    epoch = asyncio.run(lim.acquire())
    lim.release()
    lim.on_throttle(epoch)
    lim.on_throttle(epoch)  # a second 429 from the same window: no second cut
    assert lim.limit == 4 and lim.decreases == 1
    lim.on_throttle(lim.epoch)
    assert lim.limit == 2
    for _ in range(100):
        lim.on_success()
    assert lim.limit == 8


def test_limiter_blocks_at_the_window():
    async def main():
        lim = AdaptiveLimiter(2, 1)
        await lim.acquire()
        await lim.acquire()
        waiter = asyncio.ensure_future(lim.acquire())
        await asyncio.sleep(0.01)
        blocked = not waiter.done()
        lim.release()
        await asyncio.wait_for(waiter, 1)
        return blocked, lim.in_flight

    assert asyncio.run(main()) == (True, 2)


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there


def test_load_balanced_over_base_urls_and_survives_a_dead_one(fake_teacher):
    (a, url_a), (b, url_b) = fake_teacher(latency_s=0.02), fake_teacher(latency_s=0.02)
    res, _ = run_all(cfg([url_a, url_b, _dead_url()]), 60)
    assert all(r["status"] == "ok" for r in res.values()) and len(res) == 60
    assert len(a.answered_keys) > 10 and len(b.answered_keys) > 10
    assert len(a.answered_keys) + len(b.answered_keys) == 60


def test_openai_sdk_and_our_client_speak_the_same_wire_format(fake_teacher, monkeypatch, tmp_path):
    server, url = fake_teacher(record=True)
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-test-parity")
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                                             {"type": "text", "text": "what is it?"}]}]  # fmt: skip
    sampling = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 32, "seed": 3}

    async def sdk():
        client = openai.AsyncOpenAI(base_url=url, api_key="sk-test-parity", max_retries=0)
        resp = await client.chat.completions.create(model="m", messages=messages, **sampling)
        await client.close()
        return resp

    sdk_resp = asyncio.run(sdk())
    ours = complete_many([{"messages": messages, "sampling": sampling}], cfg(url, api_key_env="TEST_TEACHER_KEY"),
                         tmp_path / "journal.jsonl")  # fmt: skip
    (sdk_req, our_req) = server.requests
    assert our_req["path"] == sdk_req["path"] == "/v1/chat/completions"
    assert our_req["body"] == sdk_req["body"]
    for h in ("Authorization", "Content-Type"):
        assert our_req["headers"][h].split(";")[0] == sdk_req["headers"][h].split(";")[0]
    # Same response bytes parsed both ways (the fake server's answer is a function of the key only).
    raw = server._completion("m", "k" * 12, "stop", 5)
    sdk_parsed = openai.types.chat.ChatCompletion.model_validate(orjson.loads(raw))
    mine, _ = parse_response(raw)
    assert mine["content"] == sdk_parsed.choices[0].message.content
    assert mine["finish_reason"] == sdk_parsed.choices[0].finish_reason
    assert mine["usage"]["prompt_tokens"] == sdk_parsed.usage.prompt_tokens
    assert ours[0]["status"] == "ok" and ours[0]["text"].startswith("<think>")
    assert sdk_resp.choices[0].message.content.startswith("<think>")


def test_complete_many_keeps_order_and_reuses_the_journal(fake_teacher, tmp_path):
    server, url = fake_teacher()
    reqs = [{"messages": [{"role": "user", "content": f"q{i % 4}"}], "sampling": {"max_tokens": 8}} for i in range(6)]
    first = complete_many(reqs, cfg(url), tmp_path / "j.jsonl")
    assert [r["status"] for r in first] == ["ok"] * 6 and len(server.seen_keys) == 4  # identical requests sent once
    assert first[0]["text"] == first[4]["text"] != first[1]["text"]
    assert set(first[0]) == {"status", "text", "error", "usage"} and first[0]["usage"]["completion_tokens"] == 16
    again = complete_many(reqs + [{"messages": [{"role": "user", "content": "new"}], "sampling": {}}], cfg(url),
                          tmp_path / "j.jsonl")  # fmt: skip
    assert again[:6] == first and len(server.seen_keys) == 5  # only the new one was sent


def test_complete_many_failed_result_shape(fake_teacher, tmp_path):
    _, url = fake_teacher(status=401)
    (r,) = complete_many([{"messages": [{"role": "user", "content": "q"}], "sampling": {}}], cfg(url), tmp_path / "j")
    assert r["status"] == "failed" and r["text"] is None and "HTTP 401" in r["error"]


def test_missing_key_env_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_TEACHER_KEY", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_TEACHER_KEY"):
        cfg("http://127.0.0.1:1/v1", api_key_env="NO_SUCH_TEACHER_KEY").api_key()


@pytest.mark.parametrize(
    "kw, match",
    [({"base_urls": ["ftp://x"]}, "http"), ({"max_concurrency": 0}, "concurrency"), ({"timeout_s": 0}, "timeout")],
)
def test_client_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        ClientConfig(**{"base_urls": ["http://127.0.0.1:1/v1"], "model": "m", **kw})


@pytest.mark.parametrize(
    "value, expected",
    [("3", 3.0), ("0.25", 0.25), ("-1", 0.0), (None, None), ("soon", None),
     ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0)],  # now = 07:28:00 below
)  # fmt: skip
def test_retry_after_header(value, expected):
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after_s(value, now=now) == expected

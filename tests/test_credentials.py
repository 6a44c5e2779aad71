"""Credentials in a `--base_url` (`http://user:PW@host/v1`) connect as given but are never written or logged: not in
the resolved config, the summary, trace rows (reason records its endpoint in every row) or any log line (issue 21)."""

import logging
from pathlib import Path

import pytest

from distill.cli import main as cli_main
from distill.urls import RedactingFilter, redact_url, redacted

REPO = Path(__file__).resolve().parents[1]
SECRET = "S3cretPW"


@pytest.mark.parametrize(
    "url, clean",
    [
        ("http://user:S3cretPW@host:8000/v1", "http://host:8000/v1"),
        ("https://tok@api.example/v1", "https://api.example/v1"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("see http://a:b@h/v1 and https://c:d@k/x/y@z", "see http://h/v1 and https://k/x/y@z"),  # '@' in a path stays
    ],
)
def test_redact_url(url, clean):
    assert redact_url(url) == clean
    assert redacted({"base_url": [url], "n": 3}) == {"base_url": [clean], "n": 3}


def test_log_records_are_redacted(caplog):
    logger = logging.getLogger("distill.test_credentials")
    caplog.handler.addFilter(RedactingFilter())
    logger.warning("POST %s failed", f"http://u:{SECRET}@h/v1/chat/completions")
    assert SECRET not in caplog.text and "POST http://h/v1/chat/completions failed" in caplog.text


def _leaks(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


@pytest.mark.parametrize("verb", ["generate", "reason"])
def test_credentials_in_base_url_reach_no_file_and_no_log(verb, fake_teacher, tmp_path, capfd):
    _, url = fake_teacher()
    url = url.replace("http://", f"http://distill:{SECRET}@")
    out = tmp_path / "traces.jsonl"
    common = ["--base_url", url, "--output", str(out), "--progress", "false", "--max_examples", "3"]
    if verb == "generate":
        args = ["generate", "--config", str(REPO / "recipes/demo/generate.yaml"), "--input", str(REPO / "data/demo/train"),
                "--image_root", str(REPO / "data/demo"), *common]  # fmt: skip
    else:
        args = ["reason", "--backend", "openai", "--model", "student", "--input", str(REPO / "data/demo/train"),
                "--image_root", str(REPO / "data/demo"), *common]  # fmt: skip
    assert cli_main(args) == 0
    assert out.exists() and not _leaks(tmp_path)
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err
    # the endpoint is still recorded, without the credentials
    assert "http://127.0.0.1:" in (out.with_name("traces.config.yaml")).read_text()


def test_an_unreachable_teacher_is_named_without_credentials(tmp_path, capfd):
    out = tmp_path / "traces.jsonl"
    args = ["generate", "--config", str(REPO / "recipes/demo/generate.yaml"), "--input", str(REPO / "data/demo/train"),
            "--image_root", str(REPO / "data/demo"), "--base_url", f"http://u:{SECRET}@127.0.0.1:9/v1",
            "--output", str(out), "--progress", "false", "--max_examples", "2", "--max_retries", "0"]  # fmt: skip
    assert cli_main(args) == 2
    err = capfd.readouterr().err
    assert "127.0.0.1:9" in err and SECRET not in err and not _leaks(tmp_path)


@pytest.mark.parametrize("url, mode", [(f"http://u:{SECRET}@h/v1", 0o600), ("http://h/v1", 0o644)])
def test_a_pipeline_stage_config_with_credentials_is_private(url, mode, tmp_path):
    """`distill run` hands each stage its config as a file, which must keep the URL as given: readable by its owner
    only when it holds credentials (configs and summaries the stage writes are redacted as everywhere)."""
    import os

    from distill.pipeline_stages import STAGES
    from distill.run import run_stage
    from distill.stage import StageError

    spec = next(s for s in STAGES if s.verb == "generate")
    old = os.umask(0o022)
    try:
        with pytest.raises(StageError):  # `false` stands in for the stage's process: the config is written first
            run_stage(spec, {"base_url": [url], "model": "m"}, tmp_path, launcher=["false"])
    finally:
        os.umask(old)
    assert (tmp_path / spec.name / "stage_config.yaml").stat().st_mode & 0o777 == mode


def test_credentials_in_the_url_and_an_api_key_are_refused_before_any_request(tmp_path, capfd, monkeypatch):
    """Both need the Authorization header: aiohttp refused every request ('client error' on every row)."""
    monkeypatch.setenv("DISTILL_TEST_KEY", "k")
    args = ["generate", "--config", str(REPO / "recipes/demo/generate.yaml"), "--input", str(REPO / "data/demo/train"),
            "--base_url", f"http://u:{SECRET}@127.0.0.1:9/v1", "--api_key_env", "DISTILL_TEST_KEY",
            "--output", str(tmp_path / "t.jsonl")]  # fmt: skip
    assert cli_main(args) == 2
    err = capfd.readouterr().err
    assert "use one of them" in err and SECRET not in err and not any(tmp_path.iterdir())

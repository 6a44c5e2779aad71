"""Every task kind's template renders fully on a real-shaped row (issue 19): rows in MMEB-V2's published shapes
(distill.testing.mmeb_published) and the demo, both sides and modes; no placeholder written into a sentence renders
empty; text-to-video retrieval uses the text-query template; video QA shows its options; native video parts.

    pytest -q tests/test_prompts_render.py
"""

import base64
import io
import re
import string
from pathlib import Path

import pytest
from PIL import Image

from distill.cli import main as cli_main
from distill.data.mmeb import load_examples
from distill.io import BadRow, read_jsonl
from distill.teacher.prompts import ImageStore, TemplateSet, is_text_query, materialize, render
from distill.testing.mmeb_published import write_published

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmeb")
    sets = write_published(root)
    rows = {}
    for name, p in sets.items():
        side = "query" if p.kind == "visdoc" else None  # visdoc: the query rows; pages come from side "target"
        rows[name] = [
            x for _, x in load_examples(p.path, trace_side=side, image_root=root) if not isinstance(x, BadRow)
        ]
        if p.kind == "visdoc":
            rows[name + ":page"] = [x for _, x in load_examples(p.path, trace_side="target", image_root=root)]
    return root, rows


def _prose_fields(template: str) -> list[tuple[re.Pattern, list[str]]]:
    """For each template line where a placeholder sits inside a sentence: a pattern for the rendered line, and the
    placeholder names in order. Lines made of placeholders alone may render empty (a row with no question text)."""
    out = []
    for line in template.splitlines():
        parsed = list(string.Formatter().parse(line))
        names = [f for _, f, _, _ in parsed if f is not None]
        literal = "".join(lit for lit, _, _, _ in parsed).strip()
        if names and literal:
            pattern = "".join(re.escape(lit) + ("(.*?)" if f is not None else "") for lit, f, _, _ in parsed)
            out.append((re.compile(pattern.strip() + "$"), names))
    return out


def _user_text(messages: list[dict]) -> str:
    content = messages[-1]["content"]
    return content if isinstance(content, str) else "\n".join(p["text"] for p in content if p["type"] == "text")


def _check_full(example: dict, side: str, mode: str, templates: TemplateSet, store: ImageStore) -> str:
    r = render(example, templates, store, mode, side)
    tpl = templates.for_example(example["task"], side, is_text_query(example, side))
    rendered = _user_text(r.messages).splitlines()
    for pattern, names in _prose_fields(tpl.user + ("\n" + tpl.hint if mode == "hinted" else "")):
        matches = [m for line in rendered if (m := pattern.match(line.strip()))]
        assert matches, (example["dataset"], side, mode, pattern.pattern, rendered)
        for m in matches:
            assert all(g.strip() for g in m.groups()), (example["dataset"], side, mode, names, m.group(0))
    assert not re.search(r"\bThe 0 images\b", "\n".join(rendered))
    return r.prompt_id


@pytest.mark.parametrize("mode", ["blind", "hinted"])
def test_every_task_kind_renders_fully_on_published_rows(published, mode):
    root, rows = published
    templates, store = TemplateSet(), ImageStore(root, 3136, 12544)
    seen = set()
    for name, examples in rows.items():
        assert examples, name
        for ex in examples:
            sides = ("target",) if name.endswith(":page") else ("query", "target")
            for side in sides:
                seen.add((ex["task"], side, _check_full(ex, side, mode, templates, store)))
    # every template is exercised: each task's query side, the candidate and page target sides
    assert {p for _, _, p in seen} >= {
        "ecr-vqa@v2",
        "ecr-classification@v2",
        "ecr-retrieval-query@v1",
        "ecr-grounding@v1",
        "ecr-video@v2",
        "ecr-visdoc@v1",
        "ecr-retrieval-target@v1",
    }


def test_text_to_video_retrieval_uses_the_text_query_template(published):
    root, rows = published
    templates, store = TemplateSet(), ImageStore(root, 3136, 12544)
    for name in ("DiDeMo", "MSR-VTT", "MSVD", "VATEX", "YouCook2"):
        r = render(rows[name][0], templates, store, "hinted", "query")
        assert r.prompt_id == "ecr-retrieval-query@v1", name
        text = _user_text(r.messages)
        assert "images are frames" not in text and rows[name][0]["query"]["text"] in text
        assert len(r.images) == 3  # the hint shows the positive video's frames (the target has no text)


def test_video_qa_shows_the_options_to_the_teacher(published):
    root, rows = published
    templates, store = TemplateSet(), ImageStore(root, 3136, 12544)
    for name, options in (("NExTQA", "(E) option 4"), ("Video-MME", "D. white"), ("MVBench", "(C) ran"),
                          ("EgoSchema", "E. doing E"), ("ActivityNetQA", "(A) yes; (B) no.")):  # fmt: skip
        text = _user_text(render(rows[name][0], templates, store, "blind", "query").messages)
        assert options in text and "The 3 images are frames" in text, name


def _frames_of(url: str) -> list:
    assert url.startswith("data:video/jpeg;base64,")
    return [Image.open(io.BytesIO(base64.b64decode(f))) for f in url.split(",", 1)[1].split(",")]


def test_native_video_parts_carry_the_sampled_frames_as_one_video(published):
    root, rows = published
    templates, store = TemplateSet(), ImageStore(root, 3136, 12544, video_parts="native")
    r = render(rows["HMDB51"][0], templates, store, "blind", "query")
    parts = r.messages[-1]["content"]
    assert [p["type"] for p in parts] == ["video_url", "text"] and r.images == [] and len(r.videos[0]) == 3
    assert parts[0]["video_url"]["url"].startswith("video-sha256:")  # keys never hold base64
    sent = materialize(r.messages, r.images, store)[-1]["content"]
    frames = _frames_of(sent[0]["video_url"]["url"])
    assert len(frames) == 3 and all(f.format == "JPEG" for f in frames)
    hinted = render(rows["MSR-VTT"][0], templates, store, "hinted", "query").messages[-1]["content"]
    assert [p["type"] for p in hinted] == ["text", "video_url"]  # text query, then the positive video
    frames_mode = render(rows["HMDB51"][0], templates, ImageStore(root, 3136, 12544), "blind", "query")
    assert frames_mode.request_sha != r.request_sha  # a different request: journaled under its own key
    assert [p["type"] for p in frames_mode.messages[-1]["content"]] == ["image_url"] * 3 + ["text"]


def test_generate_sends_native_video_parts_and_reason_openai_reads_video_rows(fake_teacher, tmp_path):
    fake, url = fake_teacher(record=True)
    common = ["--input", str(DEMO / "video" / "DemoVideoQA.jsonl"), "--image_root", str(DEMO), "--base_url", url,
              "--model", "m", "--progress", "false"]  # fmt: skip
    assert cli_main(["generate", *common, "--output", str(tmp_path / "t.jsonl"), "--video_parts", "native"]) == 0
    parts = fake.requests[0]["body"]["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["video_url", "text"] and len(_frames_of(parts[0]["video_url"]["url"])) == 8
    assert "Options:" in parts[1]["text"]
    n = len(fake.requests)
    assert cli_main(["reason", "--backend", "openai", *common, "--output", str(tmp_path / "r.jsonl")]) == 0
    rows = read_jsonl(tmp_path / "r.jsonl")
    assert rows and {r["status"] for r in rows} == {"ok"}
    sent = fake.requests[n]["body"]["messages"][-1]["content"]
    assert [p["type"] for p in sent][0] == "video_url" and len(_frames_of(sent[0]["video_url"]["url"])) == 8

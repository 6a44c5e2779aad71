import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from distill.records import make_example, side
from distill.teacher.prompts import (
    IMAGE_REF,
    TARGET_TEMPLATE,
    TARGET_TEMPLATES,
    TASK_TEMPLATES,
    ImageStore,
    TemplateSet,
    load_template,
    materialize,
    render,
    render_messages,
)

PROMPTS = Path(__file__).resolve().parents[1] / "teacher_prompts"


@pytest.mark.parametrize("name", sorted({*TASK_TEMPLATES.values(), TARGET_TEMPLATE, *TARGET_TEMPLATES.values()}))
def test_every_template_loads_and_asks_for_think(name):
    tpl = load_template(PROMPTS / name)
    assert tpl.id and tpl.version >= 1 and tpl.hint
    assert "<think>" in tpl.user and "</think>" in tpl.user


def test_bad_template_field_is_named(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("id: x\nversion: 1\nsystem: s\nuser: 'hello {nonsense}'\n")
    with pytest.raises(ValueError, match="nonsense"):
        load_template(p)


@pytest.fixture
def store(tmp_path):
    for name, colour in (("a.png", "red"), ("b.png", "blue")):
        Image.new("RGB", (100, 60), colour).save(tmp_path / name)
    return ImageStore(tmp_path, min_pixels=28 * 28, max_pixels=56 * 56)


def vqa(img="a.png", answer="red"):
    return make_example("ex1", "vqa", "OK-VQA", side("What colour?", [img]), "Represent the image with the question:",
                        side(answer), [], answer)  # fmt: skip


@pytest.mark.parametrize(
    "mode, side_, shows_answer",
    [("blind", "query", False), ("hinted", "query", True), ("blind", "target", False), ("hinted", "target", True)],
)
def test_render_modes(store, mode, side_, shows_answer):
    r = render(vqa(answer="crimson"), TemplateSet(PROMPTS), store, mode, side_)
    user = r.messages[1]["content"]
    text = user if isinstance(user, str) else " ".join(p.get("text", "") for p in user)
    hidden = "crimson" if side_ == "query" else "What colour?"  # the other side: shown only when hinted
    assert (hidden in text) == shows_answer
    assert r.prompt_id == ("ecr-retrieval-target@v1" if side_ == "target" else "ecr-vqa@v2")
    assert len(r.template_sha) == 64


def test_keyed_messages_hold_digests_and_materialize_resizes(store):
    r = render(vqa(), TemplateSet(PROMPTS), store)
    part = r.messages[1]["content"][0]
    assert part["image_url"]["url"].startswith(IMAGE_REF) and r.images == ["a.png"]
    sent = materialize(r.messages, r.images, store)
    url = sent[1]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert img.width % 28 == 0 and img.height % 28 == 0 and img.width * img.height <= 56 * 56
    assert r.messages[1]["content"][0]["image_url"]["url"].startswith(IMAGE_REF)  # keyed copy untouched
    assert render_messages(vqa(), TemplateSet(PROMPTS), store) == sent


def test_each_distinct_image_encoded_once(store):
    templates = TemplateSet(PROMPTS)
    for img in ("a.png", "b.png", "a.png", "a.png", "b.png"):
        r = render(vqa(img), templates, store)
        materialize(r.messages, r.images, store)
    assert store.encoded == 2


def test_request_sha_changes_with_image_bytes_not_path(store, tmp_path):
    templates = TemplateSet(PROMPTS)
    Image.new("RGB", (100, 60), "red").save(tmp_path / "a_copy.png")
    sha = {img: render(vqa(img), templates, store).request_sha for img in ("a.png", "a_copy.png", "b.png")}
    assert sha["a.png"] == sha["a_copy.png"] != sha["b.png"]


def test_text_only_query_is_a_plain_string_and_hinted_target_images_follow(store):
    ex = make_example("t1", "retrieval", "MSCOCO_t2i", side("a red square"), "Find an image:", side("", ["a.png"]))
    blind = render(ex, TemplateSet(PROMPTS), store, "blind")
    assert isinstance(blind.messages[1]["content"], str) and blind.images == []
    hinted = render(ex, TemplateSet(PROMPTS), store, "hinted")
    parts = hinted.messages[1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url"] and hinted.images == ["a.png"]


def test_video_template_counts_frames(store):
    ex = make_example("v1", "video", "MSR-VTT", side("what happens?", ["a.png", "b.png", "a.png"]), "", side("x"))
    r = render(ex, TemplateSet(PROMPTS), store)
    assert "The 3 images are frames" in r.messages[1]["content"][-1]["text"]


def visdoc(store_dir):
    Image.new("RGB", (80, 100), "white").save(store_dir / "page.png")
    return make_example("d1", "visdoc", "ViDoRe_docvqa", side("What was the 2019 revenue?"), "Find a document page:",
                        side("", ["page.png"]))  # fmt: skip


@pytest.mark.parametrize(
    "side_, prompt_id, images, shows",
    [
        # ViDoRe: the query is text, the page is the target; the page description runs on the page
        ("query", "ecr-retrieval-query@v1", [], "What was the 2019 revenue?"),
        ("target", "ecr-visdoc@v1", ["page.png"], "describe the page in detail"),
    ],
)
def test_visdoc_sides(store, tmp_path, side_, prompt_id, images, shows):
    r = render(visdoc(tmp_path), TemplateSet(), store, "blind", side_)
    user = r.messages[1]["content"]
    text = user if isinstance(user, str) else " ".join(p.get("text", "") for p in user)
    assert (r.prompt_id, r.images, shows in text) == (prompt_id, images, True)
    assert "What was the 2019 revenue?" not in text or side_ == "query"  # blind target side: no query text


def test_template_sha_is_stable_across_rows_request_sha_is_not(store):
    templates = TemplateSet()
    rs = [render(vqa(img, answer), templates, store) for img, answer in (("a.png", "red"), ("b.png", "blue"))]
    assert rs[0].template_sha == rs[1].template_sha == templates.for_example("vqa", "query").sha
    assert rs[0].request_sha != rs[1].request_sha
    assert render(vqa(), templates, store, side="target").template_sha != rs[0].template_sha


def test_target_side_uses_the_target_instruction(store):
    ex = {**vqa(), "target_instruction": "Represent the answer:"}
    text = render(ex, TemplateSet(), store, side="target").messages[1]["content"]
    assert "Represent the answer:" in text and "Represent the image with the question:" not in text


@pytest.mark.parametrize(
    "examples, error",
    [
        ("  - {user: 'q1', assistant: 'a1'}\n  - {user: 'q2', assistant: 'a2'}\n", None),
        ("  - {user: 'q1'}\n", "examples must be a list of"),
        ("  - {user: 'q1', assistant: ''}\n", "examples must be a list of"),
    ],
)
def test_few_shot_examples_are_literal_turns_before_the_query(store, tmp_path, examples, error):
    (tmp_path / "p").mkdir()
    for name in set(TASK_TEMPLATES.values()):
        (tmp_path / "p" / name).write_text((PROMPTS / name).read_text())
    plain = load_template(tmp_path / "p" / "vqa.yaml")
    path = tmp_path / "p" / "vqa.yaml"
    path.write_text(path.read_text() + "examples:\n" + examples)
    if error:
        with pytest.raises(ValueError, match=error):
            load_template(path)
        return
    assert load_template(path).sha != plain.sha and plain.sha == load_template(PROMPTS / "vqa.yaml").sha
    r = render(vqa(), TemplateSet(tmp_path / "p"), store)
    assert [m["role"] for m in r.messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in r.messages[1:5]] == ["q1", "a1", "q2", "a2"] and isinstance(
        r.messages[5]["content"], list
    )


def test_demo_prompts_load_for_the_demo_tasks():
    demo = TemplateSet(Path(__file__).resolve().parents[1] / "recipes" / "demo" / "prompts")
    for task in ("vqa", "classification", "retrieval", "grounding"):
        tpl = demo.for_example(task, "query")
        assert tpl.version >= 1
    assert "<think>" in demo.for_example("retrieval", "query").examples[0][1]

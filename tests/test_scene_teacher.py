"""The demo's pixel-reading image teacher (`distill serve --model NAME=shape-scenes`).

Its readings are checked against what the demo generator drew: the captions, gold answers and referred objects in
data/demo's rows (the teacher itself never sees them: it gets the rendered request, images as data URLs).
"""

import json
import re
from pathlib import Path

import orjson
import pytest
from PIL import Image, ImageDraw

from distill.data.mmeb import load_examples
from distill.scoring.answers import extract_answer, normalize
from distill.serve.chat_request import RequestError, parse_chat_request
from distill.serve.scene_reader import colour_name, read_scene
from distill.serve.scene_teacher import SceneTeacher, task_of
from distill.teacher.prompts import ImageStore, TemplateSet, render_messages
from distill.trace_rows import parse_trace

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"
CAPTIONED = re.compile(r"a (\w+) (circle|square|triangle)")


def _captioned_images() -> list[tuple[str, list[tuple[str, str]]]]:
    """(image path, the generator's (colour, shape) list) for every demo scene that has a caption."""
    out = []
    for name in ("ShapesI2T", "ShapesT2I"):
        for row in map(json.loads, (DEMO / "train" / f"{name}.jsonl").open()):
            text = row["pos_text"] if name == "ShapesI2T" else row["qry"]
            out.append((row["qry_image_path"] or row["pos_image_path"], CAPTIONED.findall(text)))
    for row in map(json.loads, (DEMO / "eval" / "ShapesI2T.jsonl").open()):
        out.append((row["qry_img_path"], CAPTIONED.findall(row["tgt_text"][0])))
    return out


def test_every_captioned_demo_scene_is_read_right():
    scenes = _captioned_images()
    assert len(scenes) == 32
    for path, drawn in scenes:
        read = [(s.colour, s.shape) for s in read_scene(Image.open(DEMO / path))]
        assert sorted(read) == sorted(drawn), path


@pytest.mark.parametrize(("rgb", "name"), [((220, 40, 40), "red"), ((40, 170, 60), "green"), ((40, 80, 220), "blue"),
                                           ((230, 200, 30), "yellow"), ((250, 250, 250), "white"),
                                           ((128, 128, 128), "grey"), ((240, 140, 20), "orange")])  # fmt: skip
def test_colour_names_by_hue(rgb, name):
    assert colour_name(rgb) == name


def _request(messages: list[dict], max_tokens: int = 96):
    return parse_chat_request(orjson.dumps({"model": "scenes", "messages": messages, "max_tokens": max_tokens}), 96)


@pytest.fixture(scope="module")
def traces() -> dict[str, list[tuple[dict, str]]]:
    """The teacher's trace for every image query of the demo (train and held-out), rendered as `generate` sends it."""
    teacher, store, templates = (
        SceneTeacher("scenes"),
        ImageStore(DEMO, 3136, 12544),
        TemplateSet(REPO / "recipes/demo/prompts"),
    )
    out: dict[str, list] = {}
    for source in ("train", "eval"):
        for _, ex in load_examples(DEMO / source):
            if ex["query"]["images"]:
                text = teacher.prepare(_request(render_messages(ex, templates, store))).text
                out.setdefault(ex["dataset"], []).append((ex, text))
    return out


def test_answers_match_the_gold_on_every_demo_vqa_and_classification_row(traces):
    for dataset in ("ShapesVQA", "ShapesCLS"):
        rows = traces[dataset]
        assert len(rows) == 20
        for ex, text in rows:
            assert normalize(extract_answer(text)) == normalize(ex["answer"]), (ex["query"]["text"], text)


def test_traces_have_the_template_form_and_fit_the_demo_budget(traces):
    for rows in traces.values():
        for _, text in rows:
            parsed = parse_trace(text)
            assert parsed["think"] and parsed["final"], text
            assert len(text.split()) <= 96  # recipes/demo/generate.yaml max_tokens (counted in words here)


def test_grounding_describes_the_referred_object_where_it_is(traces):
    for ex, text in traces["ShapesGround"]:
        phrase = re.findall(r"'([^']+)'", ex["instruction"] + ex["query"]["text"])[-1]  # "red circle"
        final = parse_trace(text)["final"]
        assert final.startswith(f"A solid {phrase} in the "), (phrase, final)


def test_retrieval_caption_lists_what_the_generator_drew(traces):
    for ex, text in traces["ShapesI2T"]:
        gold = ex["positive"]["text"]
        final = parse_trace(text)["final"]
        assert sorted(CAPTIONED.findall(final)) == sorted(CAPTIONED.findall(gold)), (final, gold)


def _scene(objects: list[tuple[str, tuple[int, int, int], tuple[int, int, int, int]]]) -> Image.Image:
    img = Image.new("RGB", (112, 112), "white")
    d = ImageDraw.Draw(img)
    for shape, fill, box in objects:
        {"circle": d.ellipse, "square": d.rectangle}.get(shape, lambda b, fill: d.polygon(
            [((b[0] + b[2]) // 2, b[1]), (b[2], b[3]), (b[0], b[3])], fill=fill))(box, fill=fill)  # fmt: skip
    return img


SCENE = [("circle", (220, 40, 40), (8, 8, 48, 48)), ("triangle", (40, 80, 220), (64, 8, 104, 48)),
         ("circle", (40, 170, 60), (64, 64, 104, 104))]  # fmt: skip


@pytest.mark.parametrize(("question", "answer"), [
    ("How many shapes are in the image?", "3"),
    ("How many circles are there?", "2"),
    ("How many red circles are there?", "1"),
    ("What color is the triangle?", "blue"),
    ("What shape is in the bottom-right part of the image?", "circle"),
    ("What shape is in the bottom-left part of the image?", "none"),
    ("Where is the green circle?", "bottom-right"),
    ("Is the sky blue?", "unknown"),
])  # fmt: skip
def test_vqa_question_kinds(question, answer):
    from distill.images import data_url, encode_image

    url = data_url(encode_image(_scene(SCENE)))
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": f"Question: {question}"}]
    text = SceneTeacher("scenes").prepare(_request([{"role": "user", "content": content}])).text
    assert extract_answer(text) == answer, text


@pytest.mark.parametrize(("query", "task"), [
    ("Represent the given image with the following question:\nQuestion: How many shapes?", "vqa"),
    ("Represent the given image for classification\n\nFirst reason ... which category?", "classification"),
    ("Select the portion of the image that isolates the object labeled as 'red circle'", "grounding"),
    ("Find an image caption describing the given everyday image.", "describe"),
])  # fmt: skip
def test_task_from_the_query(query, task):
    assert task_of(query.split("\n\n")[0]) == task


def test_text_only_request_is_refused_and_max_tokens_and_stop_apply():
    teacher = SceneTeacher("scenes")
    with pytest.raises(RequestError) as e:
        teacher.prepare(_request([{"role": "user", "content": "How many shapes?"}]))
    assert e.value.status == 400
    from distill.images import data_url, encode_image

    content = [{"type": "image_url", "image_url": {"url": data_url(encode_image(_scene(SCENE)))}},
               {"type": "text", "text": "Describe it."}]  # fmt: skip
    body = {"model": "scenes", "messages": [{"role": "user", "content": content}], "max_tokens": 5, "n": 2,
            "stop": ["</think>"]}  # fmt: skip
    request = parse_chat_request(orjson.dumps(body), 96)
    job = type("Job", (), {"prepared": teacher.prepare(request), "params": request.params})()
    choices = teacher.choices(job)
    assert len(choices) == 2 and choices[0].finish_reason == "length" and len(choices[0].text.split()) == 5
    body["max_tokens"] = 96
    request = parse_chat_request(orjson.dumps(body), 96)
    job.params = request.params
    choice = teacher.choices(job)[0]
    assert choice.finish_reason == "stop" and choice.text.startswith("<think>") and "</think>" not in choice.text


def test_served_over_the_openai_wire_format(tmp_path, monkeypatch):
    """The real `distill serve` process (started as `distill run` starts it) with the reserved name, driven by the
    openai client."""
    from openai import OpenAI

    from distill.images import data_url, encode_image
    from distill.serve.launch import LocalTeacher

    monkeypatch.chdir(REPO)  # `python -m distill` finds this checkout
    server = LocalTeacher({"models": ["scenes=shape-scenes"]}, tmp_path / "serve.log").start()
    try:
        client = OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=30)
        assert [m.id for m in client.models.list().data] == ["scenes"]
        url = data_url(encode_image(_scene(SCENE)))
        reply = client.chat.completions.create(model="scenes", max_tokens=96, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": "Question: How many shapes are in the image?"}]}])  # fmt: skip
        assert reply.choices[0].message.content.endswith("Answer: 3")
        assert reply.choices[0].finish_reason == "stop" and reply.usage.completion_tokens > 10
    finally:
        server.stop()

"""Answer extraction, VQA-style normalisation, negation and self-consistency on paraphrases (issue 10 item 3)."""

import pytest

from distill.scoring import build_scorer
from distill.scoring.answers import answer_line, answer_match, extract_answer, normalize
from distill.teacher.prompts import installed_prompts_dir, load_template
from distill.testing.traces import trace_row

PROMPTS = installed_prompts_dir()


@pytest.mark.parametrize(
    "a, b, same",
    [
        ("none", "0", True),  # VQA evaluation maps "none" to "0"
        ("don't", "dont", True),  # contractions: apostrophes dropped
        ("Don’t", "dont", True),  # typographic apostrophe
        ("3", "3.0", True),  # decimals in canonical form
        ("2.50", "2.5", True),
        ("one hundred", "100", True),
        ("a hundred", "100", True),
        ("one hundred and five", "105", True),
        ("twenty-one", "21", True),
        ("1,000", "one thousand", True),
        ("The Cat.", "cat", True),  # case, article, punctuation
        ("not a cat", "cat", False),  # negation is kept
        ("one two", "12", False),  # two numbers, not twelve
        ("3.5", "35", False),
    ],
)
def test_normalize_pairs(a, b, same):
    assert (normalize(a) == normalize(b)) is same


@pytest.mark.parametrize(
    "final, expected",
    [
        ("There are four shapes.\nAnswer: 4", "4"),  # the template's answer line
        ("Answer: 4.", "4"),
        ("I think the answer is 3 but let me check.\nAnswer: 5", "5"),  # the line wins over a marker
        ("Two guesses.\nAnswer: dog\nAnswer: cat", "cat"),  # last line wins
        ("**Final answer:** a red circle", "a red circle"),  # markdown decoration
        ("The answer is 3.5.", "3.5"),  # fallback: marker in a sentence
        ("A red circle.", "A red circle."),  # fallback: the whole final
    ],
)
def test_extract_answer(final, expected):
    assert extract_answer(final) == expected


@pytest.mark.parametrize(
    "final, gold, expected",
    [
        ("Answer: none", "0", True),
        ("Answer: 0", "none", True),
        ("Answer: dont know", "don't know", True),
        ("Answer: 3.0", "3", True),
        ("Answer: one hundred", "100", True),
        ("It is not a cat.", "cat", False),  # negated answer
        ("Answer: not a cat", "cat", False),
        ("There is no cat in the image.", "cat", False),
        ("No, it is a cat.", "cat", True),  # "no" answers something else; the clause says cat
        ("It is not a dog but a cat.", "cat", True),
        ("There are 4 shapes.", "4", True),  # containment in a sentence without an answer line
        ("Answer: 14", "4", False),
    ],
)
def test_answer_match_vqa_normalisation(final, gold, expected):
    assert answer_match(final, gold, containment=True) is expected


@pytest.mark.parametrize(
    "final, gold, expected",
    [
        ("Answer: hot dog", "dog", False),  # VQA evaluation: exact after normalisation, no containment
        ("Answer: a dog", "dog", True),  # the article is normalised away
        ("Answer: The Dog!", "dog", True),
        ("There are 4 shapes.", "4", False),  # a sentence is not the answer unless containment is asked for
        ("The answer is 4.", "4", True),  # the extracted answer part
    ],
)
def test_answer_match_is_exact_by_default(final, gold, expected):
    assert answer_match(final, gold) is expected
    row = trace_row({**EX, "answer": gold}, 0, f"<think>x</think>{final}")
    assert build_scorer("answer_match")([row]) == [float(expected)]


EX = {"id": "ex-1", "task": "vqa", "dataset": "D", "query": {"text": "How many shapes?", "images": []},
      "instruction": "Q:", "positive": {"text": "4", "images": []}, "negatives": [], "answer": "4"}  # fmt: skip


@pytest.mark.parametrize(
    "finals, expected",
    [
        # three correct paraphrases without answer lines: all agree (the case; was 1/3 each)
        (["There are 4 shapes in the picture.", "I can see four shapes.", "4 shapes are visible."], [1.0, 1.0, 1.0]),
        # answer lines: compared by extracted answer
        (["Four of them.\nAnswer: four", "Counting gives 4.\nAnswer: 4", "Answer: 5"], [2 / 3, 2 / 3, 1 / 3]),
        # two wrong answers that agree with each other, and a negated one
        (["Answer: 5", "Answer: five", "It is not 4."], [2 / 3, 2 / 3, 1 / 3]),
    ],
)
def test_self_consistency_compares_extracted_answers(finals, expected):
    rows = [trace_row(EX, i, f"<think>counting</think>{f}") for i, f in enumerate(finals)]
    assert build_scorer("self_consistency")(rows) == pytest.approx(expected)


@pytest.mark.parametrize("name", ["vqa.yaml", "classification.yaml", "video.yaml"])
def test_answer_templates_ask_for_a_parseable_answer_line(name):
    user = load_template(PROMPTS / name).user
    assert "`Answer: <" in user
    example = user.split("`Answer: ", 1)[1].split("`", 1)[0]  # what the teacher is told to write
    assert answer_line(f"Some sentence.\nAnswer: {example}") == example


def test_answer_checks_skip_target_side_traces():
    rows = [trace_row(EX, i, "<think>x</think>Answer: 4") for i in range(2)]
    rows = [rows[0], {**rows[1], "side": "target"}]  # the second describes the positive: no question to answer
    assert build_scorer("answer_match")(rows) == [1.0, None]
    assert build_scorer("self_consistency")(rows + [{**rows[0], "sample_index": 2}]) == [1.0, None, 1.0]

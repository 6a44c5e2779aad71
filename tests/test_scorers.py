"""Table-driven tests of the rule, answer and dedup scorers, and of the registry."""

import pytest

from distill.scoring import SCORERS, build_scorer
from distill.scoring.answers import answer_match, normalize
from distill.scoring.rules import repetition_ratio
from distill.testing.traces import trace_row

EX = {"id": "ex-1", "task": "vqa", "dataset": "D", "query": {"text": "How many?", "images": []}, "instruction": "Q:",
      "positive": {"text": "4", "images": []}, "negatives": [], "answer": "4"}  # fmt: skip


def rows_of(*raws, status="ok", **fields):
    return [
        {**trace_row({**EX, **fields}, i, raw, status if raw is not None else "failed")} for i, raw in enumerate(raws)
    ]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("<think>look</think>red", 1.0),
        ("  \n<think>look</think>\nred\n", 1.0),  # surrounding whitespace is fine
        ("<think>look</think>", 0.0),  # empty final
        ("<think>  </think>red", 0.0),  # empty think
        ("<think>look red", 0.0),  # unclosed
        ("<think>a<think>b</think></think>red", 0.0),  # nested
        ("</think>red<think>x", 0.0),  # closed before opened
        ("preamble <think>look</think>red", 0.0),  # text before the think part
        ("just an answer", 0.0),  # no think part at all
        (None, None),  # failed row: no trace, not applicable
    ],
)
def test_format(raw, expected):
    assert build_scorer("format")(rows_of(raw)) == [expected]


def test_format_without_required_think():
    assert build_scorer("format", require_think=False)(rows_of("just an answer", "")) == [1.0, 0.0]


@pytest.mark.parametrize(
    "status, extra, expected",
    [
        ("ok", {}, 0.0),
        ("truncated", {}, 1.0),
        ("ok", {"finish_reason": "length"}, 1.0),
        ("ok", {"usage": {"prompt_tokens": 5, "completion_tokens": 512}}, 1.0),  # hit sampling.max_tokens = 512
        ("ok", {"usage": {"prompt_tokens": 5, "completion_tokens": 511}}, 0.0),
        ("failed", {}, None),
    ],
)
def test_truncated(status, extra, expected):
    row = {**rows_of("<think>a</think>b")[0], "status": status, **extra}
    assert build_scorer("truncated")([row]) == [expected]


@pytest.mark.parametrize(
    "text, n, expected",
    [
        ("a b c d e f", 4, 0.0),  # 3 distinct 4-grams of 3
        ("a b c d a b c d", 4, 0.2),  # 5 4-grams, 4 distinct: 1 - 4/5
        ("x x x x x x", 2, 0.8),  # 5 bigrams, all "x x": 1 - 1/5
        ("A b A B", 1, 0.5),  # case-insensitive unigrams: 4 words, 2 distinct: 1 - 2/4
        ("too short", 4, 0.0),
    ],
)
def test_repetition_ratio(text, n, expected):
    assert repetition_ratio(text, n) == pytest.approx(expected)


def test_repetition_scorer_flags_a_loop():
    loop = "<think>" + "the shape is red and " * 30 + "</think>red"
    scores = build_scorer("repetition")(rows_of("<think>one two three four five six</think>done", loop, None))
    assert scores[0] == 0.0 and scores[1] > 0.9 and scores[2] is None


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from distill.testing.tiny import build_tokenizer

    path = tmp_path_factory.mktemp("tok")
    build_tokenizer().save_pretrained(path)
    return str(path)


TRICKY = ["<think>I count 3 shapes.\nThe red one is left.</think>The answer is 42.", "a  b", " lead", "trail ",
          "x \ny", "it's 3.14, isn't it?", "café au lait", "tab\there", "(B) dog", "one,two ,three", "a <|im_end|> b",
          "", "x\n\n\ny z", "1 2 3 45 678", "<|image_pad|><|image_pad|> ok", "a\tb c", "x\r\ny z", "end\n", "\nstart",
    "a \tb", "p.\n\nThe q r", "a\x0bb c", "Step 1: look.\nStep 2: count 3 shapes.\n\nAnswer: 3"]  # fmt: skip


def test_length_counts_match_the_tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = rows_of(*TRICKY, None)
    expected = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in TRICKY] + [None]
    assert build_scorer("length", tokenizer=tokenizer_dir)(rows) == expected
    # twice: the second pass is served from the chunk caches and must agree
    assert build_scorer("length", tokenizer=tokenizer_dir, part="final")(rows)[0] == len(
        tok("The answer is 42.")["input_ids"]
    )


def test_token_counter_fast_path_is_exact_for_gpt2_style_bpe():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from distill.scoring.token_count import TokenCounter

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["hello world, the answer is 42 isn't it? yes!"] * 10, trainer=trainer)
    counter = TokenCounter(bpe)
    assert counter.chunked  # GPT-2 regex byte-level BPE takes the cached path
    assert counter(TRICKY) == counter.exact(TRICKY)
    assert counter.last_slow < len(TRICKY) / 2  # most of them really went through the chunk cache


def test_token_counter_matches_on_random_texts(tokenizer_dir):
    """Differential test: random strings over letters, digits, punctuation, apostrophes and every kind of space."""
    import random

    from transformers import AutoTokenizer

    from distill.scoring.token_count import TokenCounter

    counter = TokenCounter(AutoTokenizer.from_pretrained(tokenizer_dir).backend_tokenizer)
    assert counter.chunked  # the tiny kit's tokenizer uses the Qwen2 pre-tokenizer regex
    rng = random.Random(0)
    pieces = ["the", "red", "A", "3", "42", ".", ",", "'s", "'", "(B)", "<think>", "</think>", " ", " ", " ", "\n", "\t",
              "  ", "\r\n", "é", "!?", "-", "x1"]  # fmt: skip
    texts = ["".join(rng.choices(pieces, k=rng.randint(0, 40))) for _ in range(600)]
    assert counter(texts) == counter.exact(texts)
    # without tabs, double spaces, "\r\n" and "é" about half take the chunk path: check those too
    plain = [p for p in pieces if p not in ("\t", "  ", "\r\n", "é")]
    texts = ["".join(rng.choices(plain, k=rng.randint(0, 40))) for _ in range(600)]
    assert counter(texts) == counter.exact(texts)
    assert counter.last_slow < 0.7 * len(texts)


@pytest.mark.parametrize(
    "final, gold, query, expected",
    [
        ("The answer is 4.", "4", "", True),  # answer part after the marker
        ("There are four shapes.", "4", "", True),  # number words -> digits, containment
        ("Answer: Twenty-One", "21", "", True),  # "twenty one" -> 21
        ("There are 14 shapes.", "4", "", False),  # whole-word containment only
        ("It is the Red one!", "red", "", True),  # case, article, punctuation
        ("Answer: an apple", "The apple", "", True),  # articles on both sides
        ("The answer is (B).", "B", "", True),  # option letters
        ("Answer: B. dog", "(b)", "", True),
        ("Option C", "B", "", False),
        ("Answer: B", "dog", "A. cat B. dog C. bird", True),  # letter mapped through the query's options
        ("It is a dog", "B", "A. cat B. dog", True),  # gold letter -> option text, contained
        ("not a cat but a dog", "cat", "A. cat B. dog", False),  # names another option too
        ("a circle", "A", "", False),  # the article "a" is not option A
        ("The answer is purple", "red", "", False),
    ],
)
def test_answer_match_cases(final, gold, query, expected):
    assert answer_match(final, gold, query, containment=True) is expected


def test_answer_match_is_null_where_it_does_not_apply():
    rows = [
        *rows_of("<think>x</think>The answer is 4."),  # vqa with gold -> 1.0
        *rows_of("<think>x</think>A red thing", task="retrieval", answer=None),  # no gold answer task -> None
        *rows_of(None),  # failed row -> None
        *rows_of("<think>x</think>7"),  # wrong -> 0.0, not None
    ]
    assert build_scorer("answer_match")(rows) == [1.0, None, None, 0.0]


def test_normalize():
    assert normalize("The  Twenty-one RED circles, a square!") == "21 red circles square"


def test_self_consistency():
    # example ex-1: answers 4, four, 7, (failed) -> keys 4, 4, 7 over 3 answered samples
    # rows saying 4: 2/3; the row saying 7: 1/3; failed: None. ex-2 has one sample only: None.
    rows = rows_of("<think>a</think>The answer is 4", "<think>b</think>four", "<think>c</think>7", None)
    rows += rows_of("<think>a</think>4", id="ex-2")
    assert build_scorer("self_consistency")(rows) == pytest.approx([2 / 3, 2 / 3, 1 / 3, None, None])


def test_near_duplicate_clusters():
    base = "the red circle sits left of the blue square near the top of the white image"
    texts = [base, "completely different words describing a green triangle at the bottom", base.upper() + "!", None,
             base.replace("top", "bottom")]  # fmt: skip
    rows = rows_of(*[None if t is None else f"<think>{t}</think>x" for t in texts])
    # 0 and 2 are the same words (case, punctuation ignored); 4 changes word 11 of 16, so 3 of its 14 trigrams:
    # Jaccard = 11 shared / (14 + 3) = 0.65, a duplicate at threshold 0.5 but not at 0.8
    assert build_scorer("near_duplicate", threshold=0.8)(rows) == [0, 1, 0, None, 4]
    assert build_scorer("near_duplicate", threshold=0.5)(rows) == [0, 1, 0, None, 0]


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("nope", {}, "unknown scorer 'nope'"),
        ("repetition", {"size": 3}, "unknown parameter"),
        ("repetition", {"n": 0}, "n must be >= 1"),
        ("near_duplicate", {"threshold": 1.5}, "threshold must be in"),
    ],
)
def test_registry_errors(name, params, message):
    with pytest.raises(ValueError, match=message):
        build_scorer(name, **params)


def test_every_scorer_is_registered():
    expected = {"format", "truncated", "length", "repetition", "answer_match", "self_consistency", "near_duplicate",
                "embedding_gain", "llm_judge"}  # fmt: skip
    assert expected <= set(SCORERS)

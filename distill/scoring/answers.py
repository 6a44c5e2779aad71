"""Answer scorers: `answer_match` (trace's final answer vs the gold `answer`) and `self_consistency` (agreement with
the other samples of the same example), plus the public answer functions `distill eval` shares:

    from distill.scoring.answers import extract_answer, normalize, answer_match
    extract_answer("There are four shapes.\\nAnswer: 4.")   # -> "4"   (the template's answer line)
    normalize("Don't know, the Three.0 one-hundred")         # -> "dont know 3 100"
    answer_match("Answer: hot dog", "dog")                   # -> False (exact after normalisation, as VQA)
    answer_match("It is not a cat.", "cat", containment=True)  # -> False (negated)

Extraction: the vqa / classification templates end the final part with a line `Answer: <short answer>`; the last such
line is the answer. Traces without one fall back to the text after the last "answer is" / "answer:" in the final, else
the whole final. Normalisation follows the VQA evaluation: lower case, apostrophes dropped (don't = dont), other
punctuation -> spaces, articles dropped, number words -> digits (one hundred = 100, "none" = 0), decimals in canonical
form (3.0 = 3, 1,000 = 1000). Multiple choice: a gold or predicted option letter ("B", "(B)", "option B") is compared as
a letter, and mapped to the option's text when the query lists options ("A. cat  B. dog"). Matching is exact after
normalisation, as in the VQA evaluation: "Answer: a dog" matches gold "dog", "Answer: hot dog" does not. Containment of
the gold in a sentence is opt-in (`containment=True`, the `answer_match` scorer's `containment` parameter) and counts
only where the gold is not negated ("not a cat" never matches gold "cat").
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import numpy as np
import orjson

from distill.records import TASKS_WITH_ANSWER, trace_side
from distill.scoring.registry import register, trace_text

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]  # fmt: skip
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS)} | _TENS
ARTICLES = frozenset({"a", "an", "the"})
# VQA evaluation maps "none" to "0" (its manualMap), so "none" and "zero" answers to counting questions agree.
WORD_MAP = {"none": "0"}
NEGATIONS = frozenset({"not", "no", "never", "neither", "nor", "without", "isnt", "arent", "wasnt", "werent", "dont",
                       "doesnt", "didnt", "cannot", "cant", "wont", "hasnt", "havent"})  # fmt: skip
# A negation reaches the gold only within its own clause: these words start a new one ("not a cat but a dog").
_CLAUSE_BREAKS = frozenset({"but", "rather", "instead", "so", "is", "are", "it", "its", "this", "that", "answer"})
_TOKEN = re.compile(r"\d+\.\d+|[^\W_]+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# The template's answer line ("Answer: 4", "**Final answer:** dog"), last one wins; markdown decoration allowed.
_ANSWER_LINE = re.compile(r"^[\s>*_#-]*(?:final\s+)?answer\s*[*_]*\s*[:：]\s*(.*?)[\s*_]*$", re.I | re.M)
# Fallback for traces without an answer line: text after the last "answer is" / "answer:" to the sentence end.
_ANSWER_MARKER = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*", re.I)
_LETTER_ALONE = re.compile(r"^\s*\(?([A-Ea-e])\)?\s*[.):]?\s*$")
_LETTER_LEAD = re.compile(r"^\s*(?:\(([A-Ea-e])\)|([A-E])(?:[.):]|\s*$))")
_LETTER_NAMED = re.compile(r"\b(?:option|choice)\s*\(?([A-Ea-e])\b\)?", re.I)
_OPTION = re.compile(r"(?:^|\s)\(?([A-E])[.)]\s+")


def _number_runs(words: list[str]) -> list[str]:
    """Number words -> digits: "twenty one" -> 21, "one hundred and five" -> 105, "three thousand" -> 3000; a unit
    after a unit starts a new number ("one two" -> 1 2)."""
    out: list[str] = []
    total = current = 0
    last: str | None = None  # kind of the previous number word: unit (0-19), tens, scale; None outside a number
    for i, w in enumerate(words):
        n, scale = NUMBER_WORDS.get(w), _SCALES.get(w)
        and_inside = w == "and" and last == "scale" and i + 1 < len(words) and words[i + 1] in NUMBER_WORDS
        if and_inside:
            continue
        joins = (scale is not None and last is not None) or (
            n is not None and (last == "scale" or (last == "tens" and 0 < n < 10))
        )
        if last is not None and not joins:
            out.append(str(total + current))
            total = current = 0
            last = None
        if scale is not None:
            if scale == 100:
                current = max(current, 1) * 100
            else:
                total, current = total + max(current, 1) * scale, 0
            last = "scale"
        elif n is not None:
            current += n
            last = "tens" if w in _TENS else "unit"
        else:
            out.append(w)
    if last is not None:
        out.append(str(total + current))
    return out


def _canonical_number(token: str) -> str:
    if "." not in token:
        return token
    whole, frac = token.split(".", 1)
    frac = frac.rstrip("0")
    return f"{int(whole)}.{frac}" if frac else str(int(whole))


def normalize(text: str) -> str:
    """VQA-style normalisation (module docstring): lower case, apostrophes dropped, punctuation -> spaces, articles
    dropped, number words -> digits, 'none' -> 0, decimals canonical. normalize("The Twenty-one RED circles!") ->
    "21 red circles"."""
    text = _THOUSANDS.sub("", text.lower().replace("’", "'").replace("'", ""))
    words = [_canonical_number(t) if t[0].isdigit() else WORD_MAP.get(t, t) for t in _TOKEN.findall(text)]
    return " ".join(_number_runs([w for w in words if w not in ARTICLES]))


normalize_answer = normalize  # the name `distill eval` imports; one definition


def answer_line(final: str) -> str | None:
    """The text of the last explicit `Answer: ...` line of a final (trailing period and markdown dropped), or None."""
    for m in reversed(list(_ANSWER_LINE.finditer(final or ""))):
        text = m.group(1).strip().strip("*_").strip().removesuffix(".").strip()
        if text:
            return text
    return None


def extract_answer(final: str) -> str:
    """The answer a final gives: its `Answer:` line; else after the last 'answer is' / 'answer:' up to the sentence
    end; else the whole final."""
    line = answer_line(final)
    if line is not None:
        return line
    matches = list(_ANSWER_MARKER.finditer(final))
    if not matches:
        return final.strip()
    rest = final[matches[-1].end() :]
    return re.split(r"(?<=[^\d\s])\.(?:\s|$)|\n", rest, maxsplit=1)[0].strip().removesuffix(".").strip()


def option_letter(text: str) -> str | None:
    """The option letter a short answer names ("B", "(b)", "B. dog", "option C"), upper-cased; None otherwise.

    A bare lower-case letter counts only alone or in parentheses, so the article "a" is never read as option A.
    """
    if m := _LETTER_ALONE.match(text):
        return m.group(1).upper()
    if m := _LETTER_LEAD.match(text):
        return (m.group(1) or m.group(2)).upper()
    if m := _LETTER_NAMED.search(text):
        return m.group(1).upper()
    return None


def parse_options(query_text: str) -> dict[str, str]:
    """Options listed in a multiple-choice query ("A. cat B. dog", "(A) cat (B) dog") as {letter: normalised text}."""
    marks = list(_OPTION.finditer(query_text))
    letters = [m.group(1) for m in marks]
    if len(marks) < 2 or letters != [chr(ord("A") + i) for i in range(len(letters))]:
        return {}  # not an A, B, C... sequence: ordinary text that happens to contain "A."
    ends = [m.start() for m in marks[1:]] + [len(query_text)]
    return {m.group(1): normalize(query_text[m.end() : e]) for m, e in zip(marks, ends, strict=False)}


# Samples of one example share their gold answer and query: parse those once (pure functions, bounded caches).
_normalize_cached = lru_cache(maxsize=65536)(normalize)
_options_cached = lru_cache(maxsize=65536)(parse_options)


def _negated(words: list[str], start: int) -> bool:
    """Is the phrase starting at word `start` negated within its clause ("it is not 4", "no cat")?"""
    for w in reversed(words[max(0, start - 3) : start]):
        if w in NEGATIONS:
            return True
        if w in _CLAUSE_BREAKS:
            return False
    return False


def contains(haystack: str, needle: str) -> bool:
    """Whole-word, non-negated containment of normalised strings: "4" is in "there are 4 shapes", not in "14 shapes"
    and not in "not 4 but 5"."""
    if not needle:
        return False
    words, target = haystack.split(), needle.split()
    k = len(target)
    return any(words[i : i + k] == target and not _negated(words, i) for i in range(len(words) - k + 1))


def answer_match(final: str, gold: str, query_text: str = "", containment: bool = False) -> bool:
    """Does the trace's `final` give the `gold` answer? In order: option letters (gold and answer both letters,
    or one mapped through the options the query lists); exact normalised match of the extracted answer or the whole
    final (the VQA evaluation's rule, the default); with `containment`, also non-negated whole-word containment of the
    gold in the extracted answer (with options: only when no other option's text is named too, so "a cat or a dog"
    does not match gold "cat")."""
    answer = extract_answer(final)
    gold_n, answer_n = _normalize_cached(gold), normalize(answer)
    if gold_n and gold_n == answer_n:  # the common case, decided before any option parsing
        return True
    gold_letter, pred_letter = option_letter(gold), option_letter(answer)
    if gold_letter and pred_letter:
        return gold_letter == pred_letter
    options = _options_cached(query_text) if query_text else {}
    golds = {gold_n} | ({options[gold_letter]} if gold_letter in options else set())
    golds.discard("")
    if pred_letter and options.get(pred_letter) in golds:  # gold is the option text, the trace names its letter
        return True
    if answer_n in golds or normalize(final) in golds:
        return True
    if not containment or not any(contains(answer_n, g) for g in golds):
        return False
    others = [t for t in options.values() if t not in golds]
    return not any(contains(answer_n, t) for t in others)


def _applies(row: dict, tasks) -> bool:
    # a target-side trace describes the positive: it answers no question, so the answer checks do not apply to it
    return row.get("task") in tasks and row.get("status", "ok") == "ok" and trace_side(row) == "query"


@register("answer_match")
def make_answer_match(containment: bool = False, tasks: list[str] | None = None):
    """1.0 when the final answer matches the gold `answer` (see `answer_match`: exact after normalisation; `containment`
    also accepts the gold named inside a sentence), else 0.0. None (not applicable, not
    0) for tasks outside `tasks` (default: vqa, classification), rows without a gold answer or without a trace, and
    target-side traces."""
    tasks = frozenset(tasks or TASKS_WITH_ANSWER)

    def score(rows: list[dict]) -> list:
        out = []
        for row in rows:
            final, gold = trace_text(row, "final"), row.get("answer")
            if final is None or not gold or row.get("task") not in tasks or trace_side(row) != "query":
                out.append(None)
            else:
                query = (row.get("query") or {}).get("text") or ""
                out.append(float(answer_match(final, str(gold), query, containment)))
        return out

    return score


GOLD_KEY = "=gold"  # the key of every sample that gives the gold answer, however it phrases it


def answer_key(final: str, query_text: str = "", gold: str | None = None) -> str:
    """A comparable key for a final answer: GOLD_KEY when it matches `gold` (so paraphrases of the right answer
    agree); else the option text for an option letter, else the normalised extracted answer."""
    if gold and answer_match(final, gold, query_text, containment=True):  # paraphrases of the gold agree
        return GOLD_KEY
    answer = extract_answer(final)
    letter = option_letter(answer)
    if letter:
        return (parse_options(query_text).get(letter) if query_text else None) or f"option {letter}"
    return normalize(answer)


@register("self_consistency")
def make_self_consistency(tasks: list[str] | None = None):
    """Share of the example's answered samples (same `id`, status ok, non-empty final) whose answer key (see
    `answer_key`) equals this row's: 1.0 = all samples agree, and > 0.5 means this row holds the majority answer.
    None when the example has fewer than 2 answered samples, for rows without an answer, and for tasks outside `tasks`
    (default: vqa, classification; free-text finals of other tasks are not comparable by equality)."""
    return SelfConsistency(frozenset(tasks or TASKS_WITH_ANSWER))


def _h64(value) -> int:
    return int.from_bytes(hashlib.blake2b(orjson.dumps(value), digest_size=8).digest(), "little")


class SelfConsistency:
    """`features(rows)` per chunk: a 64-bit hash of each row's id and of its answer key (0 = no answer), so `distill
    score` streams rows and keeps 16 bytes per row; `combine(chunks)` counts agreement per id. Calling it on a list
    of rows does both."""

    def __init__(self, tasks: frozenset):
        self.tasks = tasks

    def features(self, rows: list[dict]) -> np.ndarray:
        out = np.zeros((len(rows), 2), np.uint64)
        for i, row in enumerate(rows):
            final = trace_text(row, "final")
            if final is not None and final.strip() and _applies(row, self.tasks):
                query, gold = (row.get("query") or {}).get("text") or "", row.get("answer")
                out[i] = _h64(row.get("id")), _h64(answer_key(final, query, str(gold) if gold else None)) | 1
        return out

    def combine(self, chunks: list[np.ndarray]) -> list:
        feats = np.concatenate(chunks) if chunks else np.zeros((0, 2), np.uint64)
        out: list = [None] * len(feats)
        answered = np.flatnonzero(feats[:, 1] != 0)
        if not len(answered):
            return out
        ids, pairs = feats[answered, 0], feats[answered]
        _, id_inv, id_counts = np.unique(ids, return_inverse=True, return_counts=True)
        _, pair_inv, pair_counts = np.unique(pairs, axis=0, return_inverse=True, return_counts=True)
        total, same = id_counts[id_inv.ravel()], pair_counts[pair_inv.ravel()]
        for i, t, s in zip(answered.tolist(), total.tolist(), same.tolist(), strict=True):
            out[i] = s / t if t >= 2 else None
        return out

    def __call__(self, rows: list[dict]) -> list:
        return self.combine([self.features(rows)])

"""Answer scorers: `answer_match` (trace's final answer vs the gold `answer`) and `self_consistency` (agreement with
the other samples of the same example).

Normalisation (SQuAD/VQA style): lower case, number words -> digits ("twenty-one" -> "21"), punctuation -> spaces,
articles dropped, whitespace collapsed. Multiple choice: a gold or predicted option letter ("B", "(B)", "option B")
is compared as a letter, and mapped to the option's text when the query lists options ("A. cat  B. dog").
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from functools import lru_cache

from distill.records import TASKS_WITH_ANSWER
from distill.scoring.registry import register, trace_text

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]  # fmt: skip
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS)} | _TENS
ARTICLES = frozenset({"a", "an", "the"})
_PUNCT = re.compile(r"[^\w\s]|_")
# The answer part of a final: text after the last "answer is" / "answer:" marker, to the end of that sentence.
_ANSWER_MARKER = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*", re.I)
_LETTER_ALONE = re.compile(r"^\s*\(?([A-Ea-e])\)?\s*[.):]?\s*$")
_LETTER_LEAD = re.compile(r"^\s*(?:\(([A-Ea-e])\)|([A-E])(?:[.):]|\s*$))")
_LETTER_NAMED = re.compile(r"\b(?:option|choice)\s*\(?([A-Ea-e])\b\)?", re.I)
_OPTION = re.compile(r"(?:^|\s)\(?([A-E])[.)]\s+")


def normalize(text: str) -> str:
    """Lower case, punctuation -> space, number words -> digits (tens + units combined), articles dropped."""
    words = _PUNCT.sub(" ", text.lower()).split()
    out: list[str] = []
    after_tens = False  # the previous word was "twenty".."ninety", so a unit word adds to it
    for w in words:
        if w in ARTICLES:
            continue
        n = NUMBER_WORDS.get(w)
        if n is None:
            out.append(w)
        elif after_tens and 0 < n < 10:  # "twenty one" -> "21"
            out[-1] = str(int(out[-1]) + n)
        else:
            out.append(str(n))
        after_tens = w in _TENS
    return " ".join(out)


def extract_answer(final: str) -> str:
    """The answer part of a final: after the last 'answer is' / 'answer:' marker up to the sentence end, else all."""
    matches = list(_ANSWER_MARKER.finditer(final))
    if not matches:
        return final.strip()
    rest = final[matches[-1].end() :]
    return re.split(r"(?<=[^\d\s])\.(?:\s|$)|\n", rest, maxsplit=1)[0].strip()


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


def _contains(haystack: str, needle: str) -> bool:
    """Whole-word containment of normalised strings ("4" is in "there are 4 shapes", not in "14 shapes")."""
    return bool(needle) and f" {needle} " in f" {haystack} "


def answer_match(final: str, gold: str, query_text: str = "", containment: bool = True) -> bool:
    """Does the trace's `final` give the `gold` answer? In order: option letters (gold and answer both letters,
    or one mapped through the options the query lists); exact normalised match of the answer part or the whole final;
    whole-word containment of the gold in the answer part when `containment` (with options: only when no other
    option's text is named too, so "not a cat but a dog" does not match gold "cat")."""
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
    if not containment or not any(_contains(answer_n, g) for g in golds):
        return False
    others = [t for t in options.values() if t not in golds]
    return not any(_contains(answer_n, t) for t in others)


def _applies(row: dict, tasks) -> bool:
    return row.get("task") in tasks and row.get("status", "ok") == "ok"


@register("answer_match")
def make_answer_match(containment: bool = True, tasks: list[str] | None = None):
    """1.0 when the final answer matches the gold `answer` (see `answer_match`), else 0.0. None (not applicable, not
    0) for tasks outside `tasks` (default: vqa, classification), rows without a gold answer or without a trace."""
    tasks = frozenset(tasks or TASKS_WITH_ANSWER)

    def score(rows: list[dict]) -> list:
        out = []
        for row in rows:
            final, gold = trace_text(row, "final"), row.get("answer")
            if final is None or not gold or row.get("task") not in tasks:
                out.append(None)
            else:
                query = (row.get("query") or {}).get("text") or ""
                out.append(float(answer_match(final, str(gold), query, containment)))
        return out

    return score


def answer_key(final: str, query_text: str = "") -> str:
    """A comparable key for a final answer: the option text for an option letter, else the normalised answer part."""
    answer = extract_answer(final)
    letter = option_letter(answer)
    if letter:
        return (parse_options(query_text).get(letter) if query_text else None) or f"option {letter}"
    return normalize(answer)


@register("self_consistency")
def make_self_consistency(tasks: list[str] | None = None):
    """Share of the example's answered samples (same `id`, status ok, non-empty final) whose answer key equals this
    row's: 1.0 = all samples agree, and > 0.5 means this row holds the majority answer. None when the example has
    fewer than 2 answered samples, for rows without an answer, and for tasks outside `tasks` (default: vqa,
    classification; free-text finals of other tasks are not comparable by equality)."""
    tasks = frozenset(tasks or TASKS_WITH_ANSWER)

    def score(rows: list[dict]) -> list:
        keys: list[str | None] = []
        for row in rows:
            final = trace_text(row, "final")
            ok = final is not None and final.strip() and _applies(row, tasks)
            keys.append(answer_key(final, (row.get("query") or {}).get("text") or "") if ok else None)
        groups: dict[str, Counter] = defaultdict(Counter)
        for row, key in zip(rows, keys, strict=False):
            if key is not None:
                groups[row.get("id")][key] += 1
        out = []
        for row, key in zip(rows, keys, strict=False):
            counts = groups.get(row.get("id")) if key is not None else None
            total = sum(counts.values()) if counts else 0
            out.append(counts[key] / total if total >= 2 else None)
        return out

    return score

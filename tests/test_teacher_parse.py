import pytest

from distill.trace_rows import parse_trace


@pytest.mark.parametrize(
    "content, reasoning, think, final",
    [
        ("<think>look at the dog</think>It is a dog.", None, "look at the dog", "It is a dog."),
        ("<think>\n a \n</think>\n\n b \n", None, "a", "b"),
        ("look at the dog</think>It is a dog.", None, "look at the dog", "It is a dog."),  # missing opening tag
        ("It is a dog.", None, "", "It is a dog."),  # no tags: all final
        ("<think>cut off mid-sent", None, "cut off mid-sent", ""),  # truncated: unclosed think
        ("It is a dog.", "look at the dog", "look at the dog", "It is a dog."),  # reasoning_content field
        ("<think>more</think>It is a dog.", "look", "look\nmore", "It is a dog."),  # both: thinks joined
        ("<THINK>x</THINK>y", None, "x", "y"),
        ("", None, "", ""),
        (None, "only reasoning", "only reasoning", ""),
        ("<think>a</think>b</think>c", None, "a", "bc"),  # stray extra close tag is dropped from final
    ],
)
def test_parse_table(content, reasoning, think, final):
    out = parse_trace(content, reasoning)
    assert (out["think"], out["final"]) == (think, final)
    assert set(out) == {"raw", "think", "final"}


def test_raw_kept_verbatim():
    assert parse_trace("  x</think> y ")["raw"] == "  x</think> y "
    assert parse_trace("y", "x")["raw"] == "<think>x</think>y"

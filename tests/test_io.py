"""distill.io.AppendLog: a torn last line (a killed writer) is cut on open, however long it is."""

import pytest

from distill.io import AppendLog

BIG = 3 << 20  # longer than the 1 MiB block the tail is read back in


@pytest.mark.parametrize(
    "content, kept",
    [
        (b"", b""),
        (b'{"a": 1}\n', b'{"a": 1}\n'),
        (b'{"a": 1}\n{"b": ', b'{"a": 1}\n'),
        (b'{"torn', b""),
        (b'{"a": 1}\n' + b"x" * BIG, b'{"a": 1}\n'),  # torn tail spans several blocks
        (b"y" * BIG + b"\n" + b"z" * 10, b"y" * BIG + b"\n"),  # the last newline sits blocks before the end
    ],
)
def test_append_log_cuts_a_torn_tail_on_open(tmp_path, content, kept):
    path = tmp_path / "j.jsonl"
    path.write_bytes(content)
    with AppendLog(path) as log:
        n = log.append({"c": 2})
    assert path.read_bytes() == kept + b'{"c":2}\n' and n == len(b'{"c":2}\n')

"""distill.io: a torn last line (a killed writer) is cut on open, however long it is; a byte-order mark does not cost
row 1; atomic writes give files the umask's mode, as `open` would."""

import os
import stat

import pytest

from distill.io import AppendLog, current_umask, iter_jsonl, write_jsonl_atomic, write_text_atomic

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


def test_a_byte_order_mark_does_not_lose_row_1(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a"}\n{"id": "b"}\n')
    assert [row for _, row in iter_jsonl(path)] == [{"id": "a"}, {"id": "b"}]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
@pytest.mark.parametrize("write", [lambda p: write_text_atomic(p, "x"), lambda p: write_jsonl_atomic(p, [{"a": 1}])])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode, write):
    """mkstemp makes 0600 files: outputs were unreadable by another user while files beside them were 0644."""
    old = os.umask(umask)
    try:
        write(tmp_path / "out.txt")
        assert current_umask() == umask
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == mode

"""Stage fingerprints for `distill run`: a stage is skipped only when nothing it reads has changed.

    python -c "from distill.fingerprint import fingerprint; print(fingerprint('x: 1', []))"

What goes in: the stage's config text; the earlier stages' outputs it reads (`StageSpec.inputs`); every other path its
resolved config names that exists (prompt templates, tokenizer / embedder / model / checkpoint directories, DeepSpeed
and chat-template files: found by walking the config's values, so a new path-valued field is covered without a list
to keep up); and the images its input rows reference (path, size, mtime: reading every image of MMEB-train on each
resume would cost more than the stage). A prompt-template edit thus reruns `generate`, whose changed traces rerun
what follows, and nothing else.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# Files above this size are fingerprinted by (size, mtime) instead of content: checkpoints and big datasets would
# otherwise be read in full on every resume.
CONTENT_HASH_MAX_BYTES = 64 * 2**20
# A folder with more files than this is fingerprinted by names, sizes and mtimes only.
CONTENT_HASH_MAX_FILES = 10_000
# Config keys whose paths are not read as a whole: the image root is covered by the images rows reference.
NOT_READ_AS_A_WHOLE = ("image_root",)


def _hash_file(h, path: Path, by_stat: bool) -> None:
    st = path.stat()
    if by_stat or st.st_size > CONTENT_HASH_MAX_BYTES:
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        return
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)


def _hash_path(h, path: Path) -> None:
    """Feed a file's or a directory's content (names + bytes, sorted) into `h`; a missing path hashes as missing."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            h.update(str(f.relative_to(path)).encode())
            _hash_file(h, f, by_stat=len(files) > CONTENT_HASH_MAX_FILES)
    elif path.is_file():
        _hash_file(h, path, by_stat=False)
    else:
        h.update(b"<missing>")


def fingerprint(config_text: str, inputs: list[Path], images: list[Path] | None = None) -> str:
    """sha256 of the config text, the content of `inputs` and the (size, mtime) of `images`."""
    h = hashlib.sha256(config_text.encode())
    for p in inputs:
        h.update(str(p).encode())
        _hash_path(h, Path(p))
    for p in images or []:
        h.update(str(p).encode())
        try:
            st = p.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            h.update(b"<missing>")
    return h.hexdigest()


def _strings(value, key: str = ""):
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in NOT_READ_AS_A_WHOLE:
                yield from _strings(v, str(k))
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v, key)
    elif isinstance(value, str) and value.strip() and "\n" not in value and len(value) < 4096:
        yield value


def read_paths(resolved: dict, skip_under: list[Path]) -> list[Path]:
    """Existing paths named anywhere in a resolved config, minus those under `skip_under` (run outputs, covered by
    the stages' wiring) and folders that contain one of them (the working directory, the runs root)."""
    skip = [p.resolve() for p in skip_under]
    out = []
    for s in dict.fromkeys(_strings(resolved)):
        p = Path(s)
        try:
            if not p.exists():
                continue
            r = p.resolve()
        except OSError:
            continue
        if any(r == d or d in r.parents or r in d.parents for d in skip):
            continue
        out.append(p)
    return sorted(out)


def referenced_images(
    input_path: str | list[str] | None, image_root: str | None, subset: str | None = None
) -> list[Path]:
    """Every image (and video) the rows of `input_path` (or of each path of a list: `embed`'s input) reference
    (query, positive, negatives), under `image_root`."""
    if isinstance(input_path, list):
        return list(dict.fromkeys(p for one in input_path for p in referenced_images(one, image_root, subset)))
    if not input_path or not Path(input_path).exists():
        return []
    from distill.data.mmeb import load_examples

    root, seen = Path(image_root or "."), {}
    for _, row in load_examples(input_path, subset, image_root=image_root or "."):
        if not isinstance(row, dict):
            continue
        for side in [row.get("query"), row.get("positive"), *(row.get("negatives") or [])]:
            for rel in (side or {}).get("images") or [] if isinstance(side, dict) else []:
                if isinstance(rel, str):
                    seen.setdefault(rel, None)
            video = side.get("video") if isinstance(side, dict) else None
            if isinstance(video, str) and video:  # a video file, or a frame folder (its listing's mtime)
                seen.setdefault(video, None)
    return [root / rel for rel in dict.fromkeys(map(_image_file, seen))]


def _image_file(ref: str) -> str:
    """The file an image ref stands for: an embedded page (parquet:<file>#<row>) its parquet file; a malformed ref as
    it is (the stage that reads it reports it)."""
    from distill.parquet_images import parse_ref

    try:
        return parse_ref(ref)[0]
    except ValueError:  # a path, or a malformed embedded ref
        return ref

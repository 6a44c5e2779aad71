"""Which checkpoint `train` and `embed` resume from (distill.resume): the newest one whose save finished."""

from distill.resume import resume_checkpoint


def _checkpoint(out, step, complete=True):
    path = out / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"")
    if complete:  # the last file a Trainer checkpoint save writes
        (path / "trainer_state.json").write_text("{}")
    return path


def test_last_skips_a_save_cut_short_and_orders_by_step(tmp_path):
    _checkpoint(tmp_path, 4)
    ten = _checkpoint(tmp_path, 10)  # numerically after 4 and 8, though "10" sorts before "4" as text
    _checkpoint(tmp_path, 12, complete=False)  # kill -9 during this save: transformers' get_last_checkpoint takes it
    (tmp_path / "checkpoint-notes").mkdir()
    assert resume_checkpoint("last", tmp_path) == resume_checkpoint("True", tmp_path) == str(ten)


def test_fresh_first_run_and_an_explicit_path(tmp_path):
    assert resume_checkpoint("last", tmp_path / "new") is None  # a first run: nothing to resume
    _checkpoint(tmp_path, 2)
    assert all(resume_checkpoint(v, tmp_path) is None for v in (None, "", "none", "None", "false", "null"))
    assert resume_checkpoint("/some/checkpoint-7", tmp_path) == "/some/checkpoint-7"

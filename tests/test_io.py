"""Checkpoints: atomic writes that survive a full disk, safe loading, kind and shape checks."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pytest
import torch

from t2i.errors import CheckpointError
from t2i.io import (atomic_write, fill_batchnorm_counters, load_checkpoint, load_state_dict_strict,
                                     save_checkpoint)


def test_save_and_load_roundtrip_with_kind_check(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", "gan", {"step": 3, "w": torch.ones(2)})
    data = load_checkpoint(path, "gan")
    assert data["step"] == 3 and torch.equal(data["w"], torch.ones(2)) and data["format"] == "t2i"
    with pytest.raises(CheckpointError, match="'gan' checkpoint, but a 'damsm_text' one"):
        load_checkpoint(path, "damsm_text")
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", "gan", {"step": 1})
    before = path.read_bytes()

    def full_disk(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="disk full at"):  # DiskFullError is an OSError too
        atomic_write(path, full_disk)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_untrusted_pickle_is_refused_and_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "t2i", "kind": "gan", "x": _Evil()}, f)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path, "gan")
    assert not (tmp_path / "pwned").exists()


def test_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    path = save_checkpoint(tmp_path / "c.pt", "gan", {"w": torch.zeros(1000)})
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a t2i checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_strict_loading_names_the_first_mismatch():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    state = model.state_dict()
    bad = dict(state, **{"0.weight": torch.zeros(5, 3)})
    with pytest.raises(CheckpointError, match=r"shape of 0.weight is \(5, 3\) there but \(4, 3\) here"):
        load_state_dict_strict(model, bad, "model")
    with pytest.raises(CheckpointError, match="missing 1 keys"):
        load_state_dict_strict(model, {k: v for k, v in state.items() if k != "0.bias"}, "model")
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    load_state_dict_strict(model, fill_batchnorm_counters(model, old), "model")


# ------------------------------------------------------------------ hardening (issue 17)
def test_a_non_finite_state_is_never_saved_and_the_message_is_true(tmp_path):
    from t2i.errors import TrainingError
    from t2i.io import save_checkpoint

    path = tmp_path / "checkpoint.pt"
    with pytest.raises(TrainingError, match="no checkpoint was written yet"):
        save_checkpoint(path, "gan", {"step": 3, "generator": {"w": torch.tensor([1.0, float("nan")])}})
    assert not path.exists()
    save_checkpoint(path, "gan", {"step": 4, "generator": {"w": torch.ones(2)}})
    good = path.read_bytes()
    poisoned = {"step": 5, "generator": {"w": torch.ones(2)},
                "opt_d": [{"state": {0: {"exp_avg": torch.tensor([float("inf")])}}}]}  # optimiser moments count too
    with pytest.raises(TrainingError, match=r"opt_d\.0\.state\.0\.exp_avg became NaN/inf at step 5.*already at .* is kept"):
        save_checkpoint(path, "gan", poisoned)
    assert path.read_bytes() == good and not list(tmp_path.glob(".*.tmp"))


def test_stale_temporary_files_of_killed_writes_are_removed_on_the_next_write(tmp_path):
    from t2i.io import atomic_write_text

    for i in range(3):  # what kill -9 during a write leaves behind
        (tmp_path / f".checkpoint.pt.abc{i}.tmp").write_bytes(b"x" * 100)
    (tmp_path / ".other.pt.abc.tmp").write_bytes(b"x")  # another target's: not ours to remove
    atomic_write_text(tmp_path / "checkpoint.pt", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.pt.abc.tmp", "checkpoint.pt"]


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")])
def test_a_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path, failure):
    from t2i.errors import DiskFullError
    from t2i.io import atomic_write, atomic_write_text

    path = tmp_path / "checkpoint.pt"
    atomic_write_text(path, "previous")

    def write(tmp):
        Path(tmp).write_bytes(b"partial")
        raise failure

    with pytest.raises(DiskFullError, match=r"disk full at .*checkpoint\.pt \(\d+ MB free\)"):
        atomic_write(path, write)
    assert path.read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_starting_over_keeps_the_old_checkpoint_aside(tmp_path):
    from t2i.io import set_aside, start_over

    path = tmp_path / "checkpoint.pt"
    assert start_over(path) is None
    path.write_text("old run")
    first = start_over(path)
    path.write_text("second run")
    second = set_aside(path)
    assert not path.exists() and first != second
    assert first.read_text() == "old run" and second.read_text() == "second run"
    assert first.name.startswith("checkpoint-before-") and first.suffix == ".pt"


def test_the_renderer_and_io_do_not_import_torch():
    """Render worker processes import t2i.data.synthbirds (which writes through t2i.io) without torch."""
    import subprocess
    import sys

    code = "import sys, t2i.io, t2i.data.synthbirds.render; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

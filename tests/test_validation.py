"""t2i.validation: the checks every tool runs on what a user typed, and the all-or-nothing file set."""

from __future__ import annotations

import errno

import pytest

from t2i import validation as check
from t2i.errors import ConfigError, DiskFullError


@pytest.mark.parametrize("value, ok", [(3, 3), (3.0, 3), ("3", None), (True, None), (2.5, None), (None, None), (0, None)])
def test_integer_takes_whole_numbers_only(value, ok):
    if ok is None:
        with pytest.raises(ConfigError, match="n="):
            check.integer(value, "n", minimum=1)
    else:
        assert check.integer(value, "n", minimum=1) == ok
    assert check.integer(None, "n", optional=True) is None


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "abc", True])
def test_number_refuses_nan_inf_and_text(value):
    with pytest.raises(ConfigError, match="lambda"):
        check.number(value, "lambda")
    assert check.number(5, "lambda", minimum=0) == 5.0


def test_caption_is_one_line_of_text():
    assert check.caption("  a red bird ") == "a red bird"
    for bad, words in (("", "give a caption"), ("a\nb", "line break"), ("a\x00b", "NUL"), (None, "give a caption")):
        with pytest.raises(ConfigError, match=words):
            check.caption(bad)


def test_output_dir_refuses_files_and_read_only_places(tmp_path, monkeypatch):
    f = tmp_path / "f.txt"
    f.write_text("x")
    with pytest.raises(ConfigError, match="existing file"):
        check.output_dir(f)
    with pytest.raises(ConfigError, match="which is a file"):
        check.output_dir(f / "a" / "b")
    assert check.output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    monkeypatch.setattr(check.os, "access", lambda path, mode: False)  # as a read-only mount answers
    with pytest.raises(ConfigError, match="not writable"):
        check.output_dir(tmp_path / "x")


def test_first_free_dir_skips_taken_numbers(tmp_path):
    (tmp_path / "000").mkdir()
    (tmp_path / ".001.tmp").mkdir()
    assert check.first_free_dir(tmp_path) == tmp_path / "002"


def test_file_set_is_all_or_nothing(tmp_path):
    out = tmp_path / "out"
    with check.file_set(out) as stage:
        (stage / "a.png").write_bytes(b"a")
        (stage / "b.png").write_bytes(b"b")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    with pytest.raises(RuntimeError):
        with check.file_set(tmp_path / "broken") as stage:
            (stage / "a.png").write_bytes(b"a")
            raise RuntimeError("a bug half way")
    assert not (tmp_path / "broken").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left behind


def test_a_refused_file_set_leaves_no_folders_it_made(tmp_path):
    """A caption refused after the output folder was chosen must not leave an empty outputs/generate/."""
    (tmp_path / "kept").mkdir()
    with pytest.raises(ConfigError, match="unknown words"):
        with check.file_set(tmp_path / "outputs" / "generate" / "000"):
            raise ConfigError("unknown words")
    with pytest.raises(ConfigError):
        with check.file_set(tmp_path / "kept" / "000"):
            raise ConfigError("unknown words")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept"]  # what was there before stays
    with check.file_set(tmp_path / "outputs" / "generate" / "000") as stage:
        (stage / "a.png").write_bytes(b"a")
    assert (tmp_path / "outputs" / "generate" / "000" / "a.png").is_file()


def test_file_set_turns_a_full_disk_into_one_line_and_keeps_what_was_there(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.png").write_bytes(b"old")
    with pytest.raises(DiskFullError, match=r"disk full at .*out \(\d+ MB free, \d+ MB needed"):
        with check.file_set(out, overwrite=True) as stage:
            (stage / "a.png").write_bytes(b"a" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert [p.name for p in out.iterdir()] == ["old.png"] and (out / "old.png").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_file_set_into_a_folder_refuses_to_replace_files_without_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"old")
    with pytest.raises(ConfigError, match="already holds a.png"):
        with check.file_set(out) as stage:
            (stage / "a.png").write_bytes(b"new")
    assert (out / "a.png").read_bytes() == b"old"


@pytest.mark.parametrize("text", ["bogus", "cuda:x", "gpu", "cpu:0:1"])
def test_device_names(text):
    with pytest.raises(ConfigError, match="not a device"):
        check.device(text)
    assert check.device("cpu").type == "cpu"

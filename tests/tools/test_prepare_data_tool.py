"""tools/prepare_data.py source=official on tiny archives in the published formats (as a command and in process),
the image-folder check, and a 2-step DAMSM then AttnGAN training run on an image folder (subprocesses)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from archive_fixtures import truncate, write_coco_zips, write_cub_tgz, write_reed_tgz

ROOT = Path(__file__).resolve().parents[2]


def run(*args, cwd, check=True):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def one_error_line(proc, message):
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


PREPARE = str(ROOT / "tools/prepare_data.py")


def _prepare_module():
    spec = importlib.util.spec_from_file_location("prepare_data_tool", PREPARE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def archives_dir(tmp_path_factory):
    dl = tmp_path_factory.mktemp("dl")
    write_cub_tgz(dl / "CUB_200_2011.tgz")
    write_reed_tgz(dl / "cvpr2016_cub.tar.gz")
    write_coco_zips(dl)
    return dl


@pytest.mark.slow
def test_prepare_cub_and_coco_commands(tmp_path, archives_dir):
    dl = archives_dir
    proc = run(PREPARE, "data=cub", "source=official", f"archives.images={dl / 'CUB_200_2011.tgz'}",
               f"archives.captions={dl / 'cvpr2016_cub.tar.gz'}", f"data.root={tmp_path / 'birds'}", "checksum=record",
               cwd=tmp_path)
    assert "images:   4 train / 4 test (2 / 2 classes)" in proc.stdout
    assert "no published checksum; recorded" in proc.stdout and "NOT the published archive" in proc.stdout
    assert json.loads((tmp_path / "birds" / "prepared.json").read_text())["data"] == "cub"
    broken = tmp_path / "broken"
    write_coco_zips(broken)
    truncate(broken / "val2014.zip")
    proc = run(PREPARE, "data=coco", "source=official", f"archive_dir={broken}", f"data.root={tmp_path / 'coco'}",
               "checksum=record", cwd=tmp_path, check=False)
    one_error_line(proc, "val2014.zip is truncated or not a val2014 zip archive")
    assert not (tmp_path / "coco").exists()


def test_prepare_in_process(tmp_path, archives_dir, make_imagefolder, capsys):
    """The tool's prepare() on composed configs (the subprocess runs above cover the command line itself)."""
    from t2i.config import compose
    from t2i.errors import ConfigError, DataError

    tool = _prepare_module()
    dl = archives_dir
    cub = ["data=cub", "source=official", f"archive_dir={dl}", f"data.root={tmp_path / 'birds'}"]
    with pytest.raises(DataError, match="is not the published CUB_200_2011.tgz's"):
        tool.prepare(compose("prepare_data", cub))
    tool.prepare(compose("prepare_data", [*cub, "checksum=record"]))
    with pytest.raises(DataError, match="pass force=true"):
        tool.prepare(compose("prepare_data", [*cub, "checksum=record"]))
    tool.prepare(compose("prepare_data", [*cub, "checksum=record", "force=true"]))
    for data in ("coco", "coco_json"):
        tool.prepare(compose("prepare_data", [f"data={data}", "source=official", f"archive_dir={dl}",
                                              f"data.root={tmp_path / data}", "checksum=record"]))
        assert "images:   3 train / 2 test" in capsys.readouterr().out
    assert (tmp_path / "coco" / "train" / "filenames.json").is_file()
    assert (tmp_path / "coco_json" / "annotations" / "captions_train2014.json").is_file()
    with pytest.raises(ConfigError, match="source=official builds data=cub, coco or coco_json"):
        tool.prepare(compose("prepare_data", ["data=imagefolder", "source=official"]))
    with pytest.raises(DataError, match=r"no train2014.zip given: pass archives.train=PATH/train2014.zip"):
        tool.prepare(compose("prepare_data", ["data=coco", "source=official", f"archive_dir={tmp_path}"]))
    # data=imagefolder: a check of the folder with a summary, or the first bad row
    root = make_imagefolder(tmp_path / "photos", n=12, captions=2, fmt="csv")
    tool.prepare(compose("prepare_data", ["data=imagefolder", f"data.root={root}"]))
    out = capsys.readouterr().out
    assert "images:     11 train / 1 test; captions 22 / 2" in out
    assert "formats:    JPEG RGB x6, PNG RGB x6" in out and "every image is its own class" in out
    (root / "img_004.jpg").unlink()
    with pytest.raises(DataError, match="metadata.csv line 10: image 'img_004.jpg' does not exist"):
        tool.prepare(compose("prepare_data", ["data=imagefolder", f"data.root={root}"]))
    tool.prepare(compose("prepare_data", ["data=imagefolder", f"data.root={root}", "data.skip_bad=true"]))
    assert "skipped:    {'missing image': 2}" in capsys.readouterr().out  # its two rows (captions)


@pytest.mark.slow
def test_damsm_then_attngan_on_an_image_folder(tmp_path):
    from conftest import _make_imagefolder
    root = _make_imagefolder(tmp_path / "photos", n=12, captions=2, size=(48, 40), fmt="jsonl")
    common = ["data=imagefolder", f"data.root={root}", "data.source.test_fraction=0.25", "train.precision=fp32",
              "train.log_every=1", "train.ckpt_every=2", "train.image_every=2", "train.max_steps=2"]
    run(str(ROOT / "tools/train.py"), "model=damsm", "train.batch_size=4", f"run_dir={tmp_path / 'damsm'}", *common,
        cwd=tmp_path)
    vocab = json.loads((tmp_path / "damsm" / "vocab.json").read_text())
    train_rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    all_words = {w for row in train_rows for c in row["text"] for w in c.split()}
    assert 1 < len(vocab["itos"]) and set(vocab["itos"][1:]) <= all_words
    run_dir = tmp_path / "attngan"
    proc = run(str(ROOT / "tools/train.py"), "model=attngan", f"encoder.checkpoint={tmp_path / 'damsm'}",
               f"run_dir={run_dir}", "model.generator.ngf=4", "model.discriminator.ndf=4",
               "model.generator.base_size=32", "train.batch_size=4", *common, cwd=tmp_path)
    assert "exported to" in proc.stdout and "9 train / 3 test images" in proc.stdout + proc.stderr
    meta = json.loads((run_dir / "export" / "model.json").read_text())
    assert meta["step"] == 2 and json.loads((run_dir / "export" / "vocab.json").read_text())["itos"] == vocab["itos"]
    assert (run_dir / "samples" / "step000002_stage1.png").is_file()


def test_bad_render_diagnostics_are_one_line_and_write_nothing(tmp_path):
    for value, message in (("data.render.fixed=[wings]", "fixed="), ("data.render.blur=-2", "blur=")):
        proc = run(PREPARE, "data=synthbirds", f"data.root={tmp_path / 'birds'}", value, cwd=tmp_path, check=False)
        one_error_line(proc, message)
        assert not (tmp_path / "birds").exists()

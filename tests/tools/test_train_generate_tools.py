"""Subprocess smoke runs of tools/train.py (DAMSM, then AttnGAN and AttnGAN+DRAW) and tools/generate.py
on a tiny rendered synthetic-bird set, with every bad input a user can type."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run(*args, cwd, check=True):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("tools")
    data = [f"data.root={work / 'birds'}", "data.render.num_species=4", "data.render.images_per_species=6",
            "data.render.image_size=64"]
    common = [*data, "train.log_every=1", "train.ckpt_every=2", "train.image_every=2", "train.precision=fp32"]
    run(str(ROOT / "tools/train.py"), "model=damsm", "train.max_steps=2", "train.batch_size=6",
        f"run_dir={work / 'damsm'}", *common, cwd=work)
    return work, common


def test_damsm_wrote_self_describing_encoders(workdir):
    work, _ = workdir
    assert {"text_encoder.safetensors", "text_encoder.json", "image_encoder.safetensors", "image_encoder.json"} <= {
        p.name for p in (work / "damsm").iterdir()}
    assert (work / "birds" / "synthbirds.json").is_file()


@pytest.mark.parametrize("model", ["attngan", "attngan_draw"])
def test_train_then_generate(workdir, model):
    work, common = workdir
    run_dir = work / model
    small = ["model.generator.ngf=4", "model.discriminator.ndf=4", "model.generator.base_size=32",
             "train.batch_size=4"]
    proc = run(str(ROOT / "tools/train.py"), f"model={model}", "train.max_steps=2", f"run_dir={run_dir}",
               f"encoder.checkpoint={work / 'damsm'}", *small, *common, cwd=work)
    assert "exported to" in proc.stdout
    meta = json.loads((run_dir / "export" / "model.json").read_text())
    assert meta["step"] == 2 and meta["model_spec"]["name"] == model
    assert (run_dir / "samples" / "step000002_stage2.png").is_file()
    # resume=auto continues from the checkpoint
    proc = run(str(ROOT / "tools/train.py"), f"model={model}", "train.max_steps=3", f"run_dir={run_dir}",
               f"encoder.checkpoint={work / 'damsm'}", *small, *common, cwd=work)
    assert json.loads((run_dir / "export" / "model.json").read_text())["step"] == 3
    out = work / f"out_{model}"
    proc = run(str(ROOT / "tools/generate.py"), f"checkpoint={run_dir}", 'caption="a bird with a green crown"',
               "num_images=2", f"out_dir={out}", cwd=work)
    assert (out / "grid.png").is_file() and (out / "caption00_01.png").is_file()
    if model == "attngan":
        assert (out / "caption00_00_attention.png").is_file()
    else:
        assert (out / "caption00_00_canvas.png").is_file() and (out / "caption00_00_canvas.gif").is_file()


@pytest.fixture(scope="module")
def attngan_export(workdir):
    """An exported AttnGAN of its own (tests may run in any order and on any xdist worker)."""
    work, common = workdir
    run_dir = work / "attngan_for_errors"
    run(str(ROOT / "tools/train.py"), "model=attngan", "train.max_steps=1", f"run_dir={run_dir}",
        f"encoder.checkpoint={work / 'damsm'}", "model.generator.ngf=4", "model.discriminator.ndf=4",
        "model.generator.base_size=32", "train.batch_size=4", *common, cwd=work)
    return run_dir / "export"


def test_generate_bad_inputs_are_one_line_errors(workdir, attngan_export):
    work, common = workdir
    export = attngan_export
    cases = [
        (["caption=zebra giraffe"], "vocabulary"),
        (['caption="  "'], "give a caption"),
        ([f"checkpoint={work / 'nowhere'}", "caption=bird"], "does not exist"),
        ([f"captions_file={work / 'none.txt'}"], "does not exist"),
        ([f"checkpoint={work / 'damsm'}", "caption=bird"], "not an exported t2i model"),
    ]
    for args, message in cases:
        if not any(a.startswith("checkpoint=") for a in args):
            args = [f"checkpoint={export}", *args]
        proc = run(str(ROOT / "tools/generate.py"), *args, cwd=work, check=False)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and message in lines[0], (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr


def test_train_without_damsm_says_which_command_to_run(workdir):
    work, common = workdir
    proc = run(str(ROOT / "tools/train.py"), "model=attngan", f"run_dir={work / 'x'}",
               f"encoder.checkpoint={work / 'no_damsm'}", *common, cwd=work, check=False)
    assert proc.returncode == 2 and "python tools/train.py model=damsm" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_with_mismatched_stage_list_is_a_clear_error(workdir):
    work, common = workdir
    proc = run(str(ROOT / "tools/train.py"), "model=attngan", "model.generator.stages=[attention,init]",
               f"run_dir={work / 'y'}", f"encoder.checkpoint={work / 'damsm'}", *common, cwd=work, check=False)
    assert proc.returncode == 2 and "first stage must be an initial kind" in proc.stderr


def test_generate_refuses_an_export_that_names_a_callable(workdir, attngan_export, tmp_path):
    """The verified exploit: model.json naming t2i.config.build with a Hydra node that touches a file."""
    work, _ = workdir
    export = tmp_path / "export"
    shutil.copytree(attngan_export, export)
    marker = tmp_path / "pwned"
    meta = json.loads((export / "model.json").read_text())
    meta["model_spec"]["generator"] = {"target": "t2i.config.build",
                                       "kwargs": {"node": {"_target_": "pathlib.Path.touch", "self": str(marker)}}}
    (export / "model.json").write_text(json.dumps(meta))
    proc = run(str(ROOT / "tools/generate.py"), f"checkpoint={export}", "caption=bird", f"out_dir={tmp_path / 'out'}",
               cwd=work, check=False)
    assert proc.returncode == 2 and "refusing to build 't2i.config.build'" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not marker.exists()

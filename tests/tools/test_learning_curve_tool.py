"""tools/learning_curve.py: a DAMSM and an AttnGAN trained in chunks and scored at every chunk on a tiny render,
resumed by running the command again; the plot-only mode; the chunk schedule; a foreign JSON refused."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from t2i.io import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("learning_curve", ROOT / "tools" / "learning_curve.py")
learning_curve = importlib.util.module_from_spec(spec)
spec.loader.exec_module(learning_curve)


def run(*args, cwd, check=True):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "tools/learning_curve.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_chunk_targets_end_at_max_steps():
    assert learning_curve.chunk_targets(250, 1000) == [250, 500, 750, 1000]
    assert learning_curve.chunk_targets(300, 1000) == [300, 600, 900, 1000]
    assert learning_curve.chunk_targets(5, 3) == [3]


def test_plot_draws_one_panel_per_metric_and_refuses_foreign_json(tmp_path):
    curves = [{"label": name, "points": [{"step": s, "train_wall_s": 60.0 * s, "metrics": {
        "attribute_accuracy": a + 0.1 * s, "fid": 300 - 10 * s}} for s in (1, 2, 3)]} for name, a in (("a", .2), ("b", .3))]
    img = learning_curve.plot_curves(curves, tmp_path / "c.png")
    assert (tmp_path / "c.png").is_file() and img.width == 2 * 420  # two panels: attribute accuracy and FID
    px = img.load()
    colours = {px[x, y] for x in range(img.width) for y in range(img.height)}
    assert learning_curve.COLOURS[0] in colours and learning_curve.COLOURS[1] in colours  # both curves drawn
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(learning_curve.DataError, match="not a learning-curve file"):
        learning_curve.load_curve(tmp_path / "bad.json")


@pytest.mark.slow
def test_damsm_then_attngan_curves_resume(tmp_path):
    data = [f"data.root={tmp_path / 'birds'}", "data.render.num_species=8", "data.render.images_per_species=5",
            "data.render.image_size=64"]
    common = [*data, "train.log_every=1", "train.ckpt_every=1", "train.image_every=1", "train.precision=fp32",
              "device=cpu"]
    damsm = tmp_path / "damsm"
    proc = run("model=damsm", "train.max_steps=2", "curve.every=1", "train.batch_size=6", f"run_dir={damsm}",
               "model.image_size=32", "model.sentence=mean", "encoder.hidden_dim=8", "encoder.word_dim=8", *common,
               cwd=tmp_path)
    curve = json.loads((damsm / "learning_curve.json").read_text())
    assert [p["step"] for p in curve["points"]] == [1, 2]
    assert {"test/r_precision", "test/r_precision_word"} <= set(curve["points"][-1]["metrics"])
    assert (damsm / "learning_curve.png").is_file() and "threads" in curve["machine"]

    gan = tmp_path / "gan"
    small = ["model=attngan", f"encoder.checkpoint={damsm}", "model.generator.ngf=4", "model.discriminator.ndf=4",
             "model.generator.base_size=32", "train.batch_size=4", "curve.every=1", "curve.num_images=10",
             "curve.batch_size=5", "curve.metrics=[attribute_accuracy,r_precision]", f"curve.cache_dir={tmp_path}",
             "metrics.r_precision.folds=2", "metrics.attribute_accuracy.steps=3", "metrics.attribute_accuracy.width=4",
             "metrics.attribute_accuracy.image_size=16", "model.loss=hinge", "model.ma_gp_weight=2",
             "model.augment=[translation,cutout]", "model.discriminator.spectral_norm=true",
             "model.discriminator.batch_norm=false", "model.discriminator.minibatch_std=2", f"run_dir={gan}", *common]
    proc = run("train.max_steps=2", *small, cwd=tmp_path)
    assert "step 2: " in proc.stdout and "attribute_accuracy " in proc.stdout
    first = json.loads((gan / "learning_curve.json").read_text())
    assert [p["step"] for p in first["points"]] == [1, 2]
    point = first["points"][-1]
    assert 0 <= point["metrics"]["attribute_accuracy"] <= 1 and 0 <= point["metrics"]["r_precision"] <= 1
    assert "attribute_accuracy_real" in point["metrics"] and point["train_wall_s"] > first["points"][0]["train_wall_s"]
    # the same command with more steps keeps the scored points and trains on from the checkpoint
    run("train.max_steps=3", *small, cwd=tmp_path)
    resumed = json.loads((gan / "learning_curve.json").read_text())
    assert resumed["points"][:2] == first["points"] and resumed["points"][2]["step"] == 3
    assert json.loads((gan / "export" / "model.json").read_text())["step"] == 3
    saved = load_checkpoint(gan / "checkpoint.pt")  # the D levers reached the models: 4x4 code + std channel
    assert [d["kwargs"]["minibatch_std"] for d in saved["model_spec"]["discriminators"]] == [2, 2]
    assert saved["discriminators"]["0.uncond_head.parametrizations.weight.original"].shape[1] == 8 * 4 + 1
    # plot-only mode overlays curves
    out = tmp_path / "both.png"
    learning_curve.plot_curves([resumed, curve], out)
    assert out.is_file()

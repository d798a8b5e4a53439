"""tools/convert.py, then tools/evaluate.py on the converted release: IS, FID and R-precision on a CUB fixture.

The released files are stand-ins with the reference keys (tests/fixtures/reference_keys): AttnGAN's G_NET at
small widths, the DAMSM RNN_ENCODER (vocabulary of the fixture's captions.pickle) and CNN_ENCODER at their real
shapes, and a FID Inception in the layout of ``pt_inception-2015-12-05-6726825d.pth`` (random weights).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reference_checkpoints import tiny_reference_state, write_reference
from t2i.data.cub import CUBSource
from t2i.metrics.inception import FIDInceptionV3

REPO = Path(__file__).resolve().parents[2]


def _tool(name: str, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"tools/{name}.py", *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_convert_then_evaluate_a_released_attngan_on_cub(tmp_path, make_cub):
    root = make_cub(tmp_path / "birds", num_classes=4, per_class=3, test_classes=2)
    vocab = CUBSource(root, captions_per_image=10).vocabulary()
    ixtoword = dict(enumerate(vocab.itos))
    with open(root / "captions.pickle", "wb") as f:  # AttnGAN's vocabulary file, as released with the data
        pickle.dump([[[1, 2, 3]], [[2, 3]], ixtoword, {w: i for i, w in ixtoword.items()}], f, protocol=2)
    (root / "vocab.json").unlink(missing_ok=True)
    release = tmp_path / "release"
    release.mkdir()
    torch.save(tiny_reference_state("AttnGAN__bird_attn2__G_NET", old=True, ngf=4, z_dim=6, c_dim=5), release / "bird_AttnGAN2.pth",
               _use_new_zipfile_serialization=False)  # legacy serialisation, no num_batches_tracked: as released
    write_reference(release / "text_encoder200.pth", "AttnGAN__bird__RNN_ENCODER", vocab_size=len(vocab), old=True)
    write_reference(release / "image_encoder200.pth", "AttnGAN__bird__CNN_ENCODER", old=True)
    torch.manual_seed(0)
    torch.save(FIDInceptionV3(num_classes=1008).state_dict(), tmp_path / "pt_inception-2015-12-05-6726825d.pth")

    export = tmp_path / "runs" / "cub" / "attngan_released"
    proc = _tool("convert", f"generator={release / 'bird_AttnGAN2.pth'}", f"text_encoder={release / 'text_encoder200.pth'}",
                 f"image_encoder={release / 'image_encoder200.pth'}", f"captions={root / 'captions.pickle'}", f"out={export}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bird_AttnGAN2.pth: AttnGAN G_NET, 82 keys -> 97 t2i keys" in proc.stdout
    assert "image_encoder200.pth: AttnGAN CNN_ENCODER, 473 keys -> 567 t2i keys" in proc.stdout

    proc = _tool("evaluate", f"checkpoint={export}", "data=cub", f"data.root={root}", f"runs_dir={tmp_path / 'runs'}",
                 "metrics.names=[is,fid,r_precision]", f"metrics.inception_weights={tmp_path / 'pt_inception-2015-12-05-6726825d.pth'}",
                 "num_images=2", "reference_images=3", "batch_size=4", "metrics.is.splits=2", "metrics.r_precision.folds=2",
                 "metrics.r_precision.mismatched=3", "progress=false", "seed=2", f"out_dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    m = results["metrics"]
    assert m["is"] >= 1.0 and m["fid"] >= 0.0 and 0.0 <= m["r_precision"] <= 1.0
    assert results["counts"]["images"] == 2 and results["counts"]["fid_reference_images"] == 3
    assert results["protocol"]["r_precision"]["shuffle_seed"] == 2
    assert results["protocol"]["is"]["classes"] == 1008 and "unbiased" in results["protocol"]["is"]["protocol"]
    assert any(str(export / "damsm") in w for w in results["weights"])  # scored by the converted DAMSM


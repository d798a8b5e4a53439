"""t2i.benchmark_reference and tools/bench.py's side-by-side mode, against a tiny fake "reference AttnGAN" package.

The fake has the reference's module layout and interfaces (``miscc/config.py`` on easydict, ``model.py`` with
RNN_ENCODER / CNN_ENCODER fetching Inception weights through ``model_zoo.load_url``, G_NET, D_NET64/128/256,
``miscc/losses.py`` with the Python-2-era ``x.data[0]`` and uint8 masks), so no checkout is needed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from t2i.benchmark_reference import ReferenceSettings, ReferenceStep, code_dir, load_reference
from t2i.errors import ConfigError

FAKE = {
    "miscc/__init__.py": "",
    "miscc/config.py": """
        from easydict import EasyDict as edict
        __C = edict()
        cfg = __C
        __C.CUDA = True
        __C.TREE = edict(); __C.TREE.BRANCH_NUM = 3; __C.TREE.BASE_SIZE = 64
        __C.TRAIN = edict(); __C.TRAIN.FLAG = True
        __C.TRAIN.SMOOTH = edict(); __C.TRAIN.SMOOTH.GAMMA1 = 5.0; __C.TRAIN.SMOOTH.GAMMA2 = 5.0
        __C.TRAIN.SMOOTH.GAMMA3 = 10.0; __C.TRAIN.SMOOTH.LAMBDA = 1.0
        __C.GAN = edict(); __C.GAN.DF_DIM = 64; __C.GAN.GF_DIM = 128; __C.GAN.Z_DIM = 100
        __C.GAN.CONDITION_DIM = 100; __C.GAN.R_NUM = 2
        __C.TEXT = edict(); __C.TEXT.EMBEDDING_DIM = 256; __C.TEXT.WORDS_NUM = 18
    """,
    "GlobalAttention.py": "",
    "model.py": """
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        import torch.utils.model_zoo as model_zoo
        from torch.autograd import Variable
        from miscc.config import cfg
        CALLS = {"G": 0}

        class RNN_ENCODER(nn.Module):
            def __init__(self, ntoken, ninput=300, drop_prob=0.5, nhidden=128, nlayers=1, bidirectional=True):
                super().__init__()
                self.nhidden = nhidden
                self.encoder = nn.Embedding(ntoken, 4)
                self.proj = nn.Linear(4, nhidden)
            def init_hidden(self, bsz):
                return Variable(torch.zeros(1, bsz, self.nhidden))
            def forward(self, captions, cap_lens, hidden, mask=None):
                assert cap_lens.tolist() == sorted(cap_lens.tolist(), reverse=True)  # pack_padded_sequence
                words = self.proj(self.encoder(captions)).transpose(1, 2)
                return words, words.mean(2)

        class CNN_ENCODER(nn.Module):
            def __init__(self, nef):
                super().__init__()
                state = model_zoo.load_url('https://download.invalid/inception_v3_google.pth')
                assert 'Mixed_6e.branch_pool.conv.weight' in state
                print('Load pretrained model from somewhere')
                self.emb_features = nn.Conv2d(3, nef, 1)
                self.emb_cnn_code = nn.Linear(3, nef)
            def forward(self, x):
                x = F.adaptive_avg_pool2d(x, 4)
                return self.emb_features(x), self.emb_cnn_code(x.mean((2, 3)))

        class G_NET(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(cfg.GAN.Z_DIM + cfg.TEXT.EMBEDDING_DIM, 2 * cfg.GAN.CONDITION_DIM)
                self.img = nn.Linear(cfg.GAN.CONDITION_DIM, 3 * 8 * 8)
            def forward(self, z_code, sent_emb, word_embs, mask):
                CALLS["G"] += 1
                mu, logvar = self.fc(torch.cat([z_code, sent_emb], 1)).chunk(2, 1)
                x = torch.tanh(self.img(mu)).view(-1, 3, 8, 8)
                sizes = [64, 128, 256][:cfg.TREE.BRANCH_NUM]
                return [F.interpolate(x, size=s) for s in sizes], [], mu, logvar

        class D_GET_LOGITS(nn.Module):
            def __init__(self, bcondition):
                super().__init__()
                self.bcondition = bcondition
                self.fc = nn.Linear(3 + (cfg.TEXT.EMBEDDING_DIM if bcondition else 0), 1)
            def forward(self, h_code, c_code=None):
                x = torch.cat([h_code, c_code], 1) if self.bcondition else h_code
                return torch.sigmoid(self.fc(x)).view(-1)

        class D_NET64(nn.Module):
            def __init__(self, b_jcu=True):
                super().__init__()
                self.conv = nn.Conv2d(3, 3, 3, padding=1)
                self.UNCOND_DNET = D_GET_LOGITS(False)
                self.COND_DNET = D_GET_LOGITS(True)
            def forward(self, x_var):
                return self.conv(x_var).mean((2, 3))

        D_NET128 = D_NET256 = D_NET64
    """,
    "miscc/losses.py": """
        import numpy as np
        import torch
        import torch.nn as nn
        from miscc.config import cfg

        def discriminator_loss(netD, real_imgs, fake_imgs, conditions, real_labels, fake_labels):
            real, fake = netD(real_imgs), netD(fake_imgs.detach())
            return (nn.BCELoss()(netD.COND_DNET(real, conditions), real_labels)
                    + nn.BCELoss()(netD.COND_DNET(fake, conditions), fake_labels)
                    + nn.BCELoss()(netD.UNCOND_DNET(fake), fake_labels))

        def generator_loss(netsD, image_encoder, fake_imgs, real_labels, words_embs, sent_emb, match_labels,
                           cap_lens, class_ids):
            errG_total, logs = 0, ''
            for i in range(len(netsD)):
                g_loss = nn.BCELoss()(netsD[i].COND_DNET(netsD[i](fake_imgs[i]), sent_emb), real_labels)
                errG_total += g_loss
                logs += 'g_loss%d: %.2f ' % (i, g_loss.data[0])
            masks = []
            for i in range(len(class_ids)):
                mask = (class_ids == class_ids[i]).astype(np.uint8)
                mask[i] = 0
                masks.append(mask.reshape((1, -1)))
            masks = torch.ByteTensor(np.concatenate(masks, 0))
            _, cnn_code = image_encoder(fake_imgs[-1])
            scores = cnn_code @ sent_emb.t() * cfg.TRAIN.SMOOTH.GAMMA3
            scores.data.masked_fill_(masks, -float('inf'))
            s_loss = nn.CrossEntropyLoss()(scores, match_labels) * cfg.TRAIN.SMOOTH.LAMBDA
            logs += 's_loss: %.2f ' % s_loss.data[0]
            return errG_total + s_loss, logs

        def KL_loss(mu, logvar):
            KLD_element = mu.pow(2).add_(logvar.exp()).mul_(-1).add_(1).add_(logvar)
            return torch.mean(KLD_element).mul_(-0.5)
    """,
}


@pytest.fixture
def fake_reference(tmp_path) -> Path:
    root = tmp_path / "AttnGAN"
    for name, text in FAKE.items():
        path = root / "code" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_code_dir_takes_the_checkout_or_its_code_folder_and_refuses_others(fake_reference, tmp_path):
    assert code_dir(fake_reference) == code_dir(fake_reference / "code") == fake_reference / "code"
    with pytest.raises(ConfigError, match="not an AttnGAN checkout"):
        code_dir(tmp_path)


def test_reference_iteration_updates_d_g_and_its_average(fake_reference, capsys):
    modules = load_reference(fake_reference)
    assert modules["config"].cfg.TREE.BRANCH_NUM == 3  # the easydict shim (or the package) carries attributes
    g = torch.Generator().manual_seed(0)
    b, settings = 4, ReferenceSettings(stages=2, embed_dim=8, z_dim=6, c_dim=5)
    lengths = torch.tensor([3, 5, 2, 4])  # unsorted: the step sorts as datasets.prepare_data does
    captions = torch.randint(1, 10, (b, 5), generator=g)
    images = [torch.rand(b, 3, s, s, generator=g) * 2 - 1 for s in (64, 128)]
    step = ReferenceStep(modules, settings, 10, images, captions, lengths, torch.arange(b))
    assert "Load pretrained model" not in capsys.readouterr().out  # its print is kept off the bench's output
    assert modules["config"].cfg.TREE.BRANCH_NUM == 2 and modules["config"].cfg.CUDA is False
    d_before = [p.detach().clone() for d in step.discriminators for p in d.parameters()]
    g_before = [p.detach().clone() for p in step.generator.parameters()]
    logs = step()
    logs = step()
    assert modules["model"].CALLS["G"] == 2
    assert set(logs) == {"d_total", "g_total"} and all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert all(not torch.equal(a, p) for a, p in zip(d_before, (p for d in step.discriminators for p in d.parameters())))
    moved = list(step.generator.parameters())
    assert all(not torch.equal(a, p) for a, p in zip(g_before, moved))
    for a, avg, p in zip(g_before, step.avg_param_g, moved):  # avg = 0.999^2 a + ... : between a and p, near a
        assert torch.allclose(avg, a, atol=1e-2 * (p - a).abs().max().item() + 1e-7)
        assert not torch.equal(avg, a)
    assert not any(p.requires_grad for p in step.image_encoder.parameters())


def test_bench_side_by_side_times_both_and_prints_the_ratio(fake_reference, tmp_path):
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "side.json"
    args = [sys.executable, str(repo / "tools" / "bench.py"), "+experiment=attngan_cub", f"reference.attngan={fake_reference}",
            "threads=1", f"out={out}", "side_by_side.stages=[1,2]", "side_by_side.batch_sizes=[2]",
            "side_by_side.options=[plain,default,bf16]", "side_by_side.steps=2", "side_by_side.warmup=0",
            "side_by_side.image_encoder=light", "training.damsm_width=4", "training.damsm_image_size=32",
            "model.generator.ngf=2", "model.generator.res_blocks=1", "model.discriminator.ndf=2",
            "encoder.word_dim=8", "encoder.hidden_dim=4", "training.vocab_size=20"]
    run = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "| stages | batch | reference s/it | plain s/it | default s/it | bf16 s/it |" in run.stdout
    assert "precision: reference fp32; plain fp32; default " in run.stdout and "; bf16 bf16" in run.stdout
    assert "python tools/bench.py +experiment=attngan_cub" in run.stdout and "load average" in run.stdout
    assert "parameters, 1 stage(s): reference G " in run.stdout and "; bf16 G " in run.stdout
    data = json.loads(out.read_text())
    rows = data["side_by_side"]
    variants = ("reference", "plain", "default", "bf16")
    assert {(r["stages"], r["variant"]) for r in rows} == {(s, v) for s in (1, 2) for v in variants}
    precision = {r["variant"]: r["precision"] for r in rows}
    assert precision["reference"] == precision["plain"] == "fp32" and precision["bf16"] == "bf16"
    assert precision["default"] in ("fp32", "bf16")  # precision=auto: what this CPU's probe chose
    for r in rows:
        assert len(r["times"]) == 2 and r["median"] > 0
        ref = next(x for x in rows if x["stages"] == r["stages"] and x["variant"] == "reference")
        assert r["reference_over_this"] == pytest.approx(ref["median"] / r["median"])
        assert r["generator_params"] > 0 and r["discriminator_params"] > 0
    assert "cpu_line" in data["machine"] and data["machine"]["threads"] == 1


def test_bench_side_by_side_refuses_a_model_the_reference_cannot_build(fake_reference, tmp_path):
    repo = Path(__file__).resolve().parents[1]
    args = [sys.executable, str(repo / "tools" / "bench.py"), f"reference.attngan={fake_reference}", "out=",
            "side_by_side.stages=[1]", "side_by_side.batch_sizes=[2]"]
    run = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 2
    assert "error: the reference AttnGAN cannot build this model: base_size 32 (AttnGAN: 64)" in run.stderr + run.stdout
    assert "Traceback" not in run.stderr

"""DAMSM trainer: learning on a toy task, exact resume, NaN stop, exports and their checks, lr schedule."""

import math

import numpy as np
import pytest
import torch

from t2i.errors import TrainingError
from t2i.io import load_checkpoint
from t2i.models.damsm import load_image_encoder, load_text_encoder
from t2i.models.factory import read_module_record
from t2i.models.image_encoders import LightImageEncoder
from t2i.models.text_encoders import RNNTextEncoder
from t2i.structures import Batch
from t2i.training.damsm import DAMSMTrainer, damsm_lr

VOCAB = 12
COLOURS = torch.tensor([[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]], dtype=torch.float32)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread avoids contention on a shared CPU (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ToyVocab:
    def __init__(self, n=VOCAB):
        self.itos = ["<end>"] + [f"w{i}" for i in range(1, n)]

    def __len__(self):
        return len(self.itos)

    def to_dict(self):
        return {"format": "t2i-vocab", "itos": list(self.itos)}


def _batches(n_batches, b=8, seed=0):
    """Class c: a 16 px image of colour c with noise; caption: word c+1 then filler words, random length."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        cls = torch.randint(0, 4, (b,), generator=g)
        images = COLOURS[cls][:, :, None, None] * 0.8 + 0.2 * torch.randn(b, 3, 16, 16, generator=g)
        lengths = torch.randint(2, 5, (b,), generator=g)
        captions = torch.randint(5, VOCAB, (b, 4), generator=g)
        captions[:, 0] = cls + 1
        captions[torch.arange(4)[None] >= lengths[:, None]] = 0
        out.append(Batch(images=[images.clamp(-1, 1)], captions=captions, lengths=lengths, class_ids=cls))
    return out


def _models(seed=0):
    torch.manual_seed(seed)
    return (RNNTextEncoder(VOCAB, word_dim=8, hidden_dim=8, dropout=0.1),
            LightImageEncoder(embed_dim=16, width=4, image_size=16))


def _trainer(tmp_path, train, test=None, seed=0, **kw):
    text, image = _models(seed)
    kw = dict(lr=0.01, epochs=1, ckpt_every=1000, log_every=1, device="cpu", progress=False, vocab=ToyVocab(),
              folds=2) | kw
    return DAMSMTrainer(text, image, train, test, tmp_path, **kw)


def test_learns_toy_matching_and_exports(tmp_path):
    train, test = _batches(4), _batches(2, seed=1)
    trainer = _trainer(tmp_path, train, test, epochs=5, lr=0.02, log_every=5, seen_loader=train[:2])
    before = sum(trainer.compute_loss(b).loss.item() for b in test)
    metrics = trainer.fit()
    after = sum(trainer.compute_loss(b).loss.item() for b in test)
    assert trainer.step == 20 and after < 0.8 * before
    assert 0.0 <= metrics["test/r_precision"] <= 1.0 and "test/loss_word" in metrics
    assert 0.0 <= metrics["seen/r_precision"] <= 1.0 and metrics["seen/r_precision_std"] >= 0.0
    # the seen-species score is the test score's computation on other images: the same images give the same
    trainer.seen_loader = test
    again = trainer.evaluate()
    assert again["seen/r_precision"] == pytest.approx(again["test/r_precision"])
    assert again["seen/r_precision_std"] == pytest.approx(again["test/r_precision_std"])
    assert (tmp_path / "tb").is_dir() and (tmp_path / "checkpoint.pt").is_file()
    # exports rebuild themselves, frozen, with identical outputs
    text = load_text_encoder(tmp_path, vocab=ToyVocab())
    image = load_image_encoder(tmp_path, embed_dim=16)
    assert not any(p.requires_grad for p in text.parameters()) and not text.training
    trainer.text_encoder.eval()
    trainer.image_encoder.eval()
    with torch.no_grad():
        assert torch.allclose(text.encode(test[0]).sentence, trainer.text_encoder.encode(test[0]).sentence)
        assert torch.allclose(image(test[0].images[-1])[1], trainer.image_encoder(test[0].images[-1])[1])
    data = read_module_record(tmp_path / "text_encoder.safetensors")
    assert data["kind"] == "damsm_text" and data["spec"]["kwargs"]["vocab_size"] == VOCAB
    assert data["vocab"]["itos"] == ToyVocab().itos


def test_resume_is_exact(tmp_path):
    train = _batches(3)
    full = _trainer(tmp_path / "full", train, max_steps=5, epochs=10)
    full.fit()
    part = _trainer(tmp_path / "part", train, max_steps=4, epochs=10, ckpt_every=2)
    part.fit()
    resumed = _trainer(tmp_path / "part", train, seed=123, max_steps=5, epochs=10)  # other init: must be overwritten
    resumed.fit()
    assert resumed.step == 5
    for a, b in zip(full.text_encoder.state_dict().values(), resumed.text_encoder.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(full.image_encoder.state_dict().values(), resumed.image_encoder.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, _batches(2), ckpt_every=1)
    trainer.train_step(_batches(1)[0])
    path = trainer.save_training_checkpoint()
    stamp = path.stat().st_mtime_ns
    with torch.no_grad():
        trainer.text_encoder.encoder.weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match="step 1") as err:
        trainer.train_step(_batches(1)[0])
    assert "\n" not in str(err.value)
    assert path.stat().st_mtime_ns == stamp and load_checkpoint(path)["step"] == 1


def test_r_precision_skipped_warns_only_when_skipped(tmp_path, caplog):
    trainer = _trainer(tmp_path, _batches(1), _batches(2, seed=1))  # 16 test images, folds=2: R-precision runs
    with caplog.at_level("WARNING", logger="t2i.training.damsm"):
        metrics = trainer.evaluate()
    assert "test/r_precision" in metrics and "R-precision skipped" not in caplog.text
    few = _trainer(tmp_path / "few", _batches(1), _batches(1, b=1, seed=1), folds=10)  # 1 test image
    with caplog.at_level("WARNING", logger="t2i.training.damsm"):
        metrics = few.evaluate()
    assert "test/r_precision" not in metrics and "R-precision skipped: 1 test images" in caplog.text


def test_lr_schedule_matches_reference_loop():
    lr0 = 0.002
    lr, expected = lr0, []
    for _ in range(200):  # pretrain_DAMSM.py: after each epoch, `if lr > lr0 / 10: lr *= 0.98`
        expected.append(lr)
        if lr > lr0 / 10.0:
            lr *= 0.98
    assert [damsm_lr(lr0, e) for e in range(200)] == pytest.approx(expected, rel=1e-12)
    assert damsm_lr(lr0, 199) == pytest.approx(lr0 * 0.98 ** 114) and damsm_lr(lr0, 199) < lr0 / 10


def test_bf16_step_runs(tmp_path):
    trainer = _trainer(tmp_path, _batches(1), precision="bf16")
    values = trainer.train_step(_batches(1)[0])
    assert math.isfinite(values["loss/total"]) and 0 <= values["acc/sent_img2text"] <= 1


@pytest.mark.parametrize("encoder", ["lstm", "gru"])
def test_configs_build_encoders(encoder):
    from t2i.config import compose
    from t2i.recipes.damsm import build_encoders

    cfg = compose("train", ["model=damsm", f"encoder={encoder}"])
    assert cfg.model.family == "damsm" and cfg.model.lr == 0.002 and cfg.model.batch_size == 32  # CPU preset (paper: 48)
    assert (cfg.model.gamma1, cfg.model.gamma2, cfg.model.gamma3, cfg.model.grad_clip) == (4.0, 5.0, 10.0, 0.25)
    text, image = build_encoders(cfg, vocab_size=30)
    assert isinstance(text, RNNTextEncoder) and text.rnn_type == encoder and text.out_dim == 256
    assert text.sentence_pooling == "mean"  # the CPU preset's model.sentence reaches the BiLSTM/GRU
    assert isinstance(image, LightImageEncoder) and image.embed_dim == 256 and image.image_size == 32


@pytest.mark.parametrize("hard_negatives", [0, 2])
def test_recipe_end_to_end_on_tiny_synthbirds(tmp_path, hard_negatives, monkeypatch):
    from t2i.config import compose
    from t2i.recipes.damsm import train
    from t2i.training import damsm

    cfg = compose("train", [
        "model=damsm", f"data.root={tmp_path / 'synth'}", f"run_dir={tmp_path / 'run'}",
        "data.render={num_species: 8, images_per_species: 5, image_size: 32, seed: 0}",
        "model.image_size=32", "model.image_encoders.light.width=4", "encoder.word_dim=8", "encoder.hidden_dim=8",
        "train.batch_size=6", "train.max_steps=2", "train.precision=fp32", "device=cpu",
        f"model.hard_negatives={hard_negatives}"])
    swapped = []
    real = damsm.colour_swapped_captions
    monkeypatch.setattr(damsm, "colour_swapped_captions", lambda *a: swapped.append(real(*a)) or swapped[-1])
    metrics = train(cfg)
    # the rendered captions name colours: every caption gets its negatives
    assert len(swapped) == (2 if hard_negatives else 0)
    assert all(bool(valid.all()) and len(neg) == 6 * hard_negatives for neg, valid in swapped)
    assert 0.0 <= metrics["test/r_precision"] <= 1.0
    # the birds carry attribute labels, so the attribute oracle's ceiling is reported beside it
    assert 0.0 < metrics["test/r_precision_ceiling"] <= 1.0 and metrics["test/r_precision_ceiling_std"] >= 0.0
    assert 0.0 <= metrics["test/r_precision_word"] <= 1.0
    assert 0.0 <= metrics["seen/r_precision"] <= 1.0  # every 3rd of the 30 training images
    run = tmp_path / "run"
    assert {"text_encoder.safetensors", "text_encoder.json", "image_encoder.safetensors", "image_encoder.json",
            "checkpoint.pt", "vocab.json"} <= {p.name for p in run.iterdir()}
    assert load_text_encoder(run).out_dim == 16


class _TrunkEncoder(torch.nn.Module):
    """A frozen 'trunk' (fixed random conv) with trainable projections, shaped like InceptionImageEncoder."""

    def __init__(self, dim=16):
        super().__init__()
        self.body = torch.nn.Conv2d(3, 6, 4, stride=4).requires_grad_(False)
        self.emb_features = torch.nn.Conv2d(6, dim, 1, bias=False)
        self.emb_cnn_code = torch.nn.Linear(6, dim)
        self.frozen_trunk = True
        self.calls = 0

    def trunk(self, images):
        self.calls += 1
        x = self.body(images)
        return x, x.mean((2, 3))

    def project(self, regions, pooled):
        return self.emb_features(regions), self.emb_cnn_code(pooled)

    def forward(self, images):
        return self.project(*self.trunk(images))


def test_trunk_feature_cache_trains_like_the_uncached_encoder(tmp_path):
    """With a frozen trunk the cached and the uncached trainer take identical steps; the cache runs the trunk once."""
    from t2i.runtime import Precision
    from t2i.training.damsm import TrunkFeatureCache

    batches = _batches(3, b=6)
    for i, b in enumerate(batches):
        b.keys = [f"img{i}_{j}" for j in range(len(b))]
    runs = []
    for cached in (False, True):
        torch.manual_seed(0)
        text, image = RNNTextEncoder(VOCAB, word_dim=8, hidden_dim=8, dropout=0.0), _TrunkEncoder()
        cache = TrunkFeatureCache(image, batches, Precision("fp32", torch.device("cpu")), torch.device("cpu"),
                                  progress=False) if cached else None
        calls = image.calls
        trainer = DAMSMTrainer(text, image, batches, None, tmp_path / str(cached), lr=0.01, max_steps=3,
                               device="cpu", progress=False, ckpt_every=100, feature_cache=cache)
        for b in batches:
            trainer.train_step(b)
        runs.append([p.detach().clone() for p in list(text.parameters()) + list(image.parameters())])
        if cached:
            assert len(cache) == 18 and image.calls == calls  # no trunk pass while training
            with pytest.raises(KeyError, match="no cached trunk features"):
                cache.lookup(["unknown"], torch.device("cpu"))
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-2)  # bf16-stored features


def test_recipe_inception_trunk_from_the_packaged_fid_network(tmp_path):
    """model=damsm_inception: FID Inception trunk weights, frozen, features cached, projections trained."""
    from t2i.config import compose
    from t2i.metrics.inception import load_fid_inception
    from t2i.recipes.damsm import train

    cfg = compose("train", [
        "model=damsm_inception", f"data.root={tmp_path / 'synth'}", f"run_dir={tmp_path / 'run'}",
        "data.render={num_species: 8, images_per_species: 5, image_size: 32, seed: 0}", "model.image_size=32",
        "encoder.word_dim=8", "encoder.hidden_dim=8", "train.batch_size=6", "train.max_steps=2",
        "train.precision=fp32", "device=cpu", "model.eval_every=null"])
    metrics = train(cfg)
    assert 0.0 <= metrics["test/r_precision"] <= 1.0
    image = load_image_encoder(tmp_path / "run")
    fid = load_fid_inception().state_dict()
    assert torch.equal(image.Mixed_7c.branch3x3dbl_3a.conv.weight, fid["Mixed_7c.branch3x3dbl_3a.conv.weight"])
    assert image.frozen_trunk and image.emb_cnn_code.weight.shape == (16, 2048)


def test_feature_cache_setting():
    from t2i.errors import ConfigError
    from t2i.recipes.damsm import use_feature_cache

    frozen, light = _TrunkEncoder(), LightImageEncoder(embed_dim=8, width=4, image_size=16)
    assert use_feature_cache({"cache_trunk_features": "auto"}, frozen) is True
    assert use_feature_cache({"cache_trunk_features": "auto"}, light) is False
    assert use_feature_cache({"cache_trunk_features": False}, frozen) is False
    with pytest.raises(ConfigError, match="frozen trunk"):
        use_feature_cache({"cache_trunk_features": True}, light)
    with pytest.raises(ConfigError, match="auto, true or false"):
        use_feature_cache({"cache_trunk_features": "sometimes"}, frozen)


def test_word_level_r_precision_matches_a_direct_ranking(tmp_path):
    """test/r_precision_word ranks each image's 1 + 99 captions by Eq. (10), across batches of varied lengths."""
    from t2i.losses.damsm import word_region_scores
    from t2i.metrics.r_precision import sample_mismatched_captions

    train, test = _batches(3), _batches(3, b=8, seed=2)
    for i, b in enumerate(test):
        b.keys = [f"t{i}_{j}" for j in range(len(b))]
    trainer = _trainer(tmp_path, train, test, epochs=2, lr=0.02, folds=4)
    trainer.fit()
    metrics = trainer.evaluate()
    trainer.text_encoder.eval()
    trainer.image_encoder.eval()
    with torch.no_grad():
        texts = [trainer.text_encoder.encode(b) for b in test]
        regions = torch.cat([trainer.image_encoder(b.images[-1])[0] for b in test])
    longest = max(t.words.shape[1] for t in texts)
    words = torch.cat([torch.nn.functional.pad(t.words, (0, 0, 0, longest - t.words.shape[1])) for t in texts])
    pads = torch.cat([torch.nn.functional.pad(t.pad_mask, (0, longest - t.pad_mask.shape[1]), value=True)
                      for t in texts])
    classes = torch.cat([b.class_ids for b in test]).numpy()
    idx = sample_mismatched_captions(classes, 99, rng=trainer.seed)
    hits = []
    for i in range(len(classes)):
        scores, _ = word_region_scores(regions[i:i + 1], words, pads)  # every caption, then pick the candidates
        own, others = scores[0, i], scores[0, torch.from_numpy(idx[i])]
        hits.append(float(own >= others.max()))
    folds = [np.mean(hits[k * 6:(k + 1) * 6]) for k in range(4)]
    assert metrics["test/r_precision_word"] == pytest.approx(np.mean(folds))
    assert metrics["test/r_precision_word_std"] == pytest.approx(np.std(folds))


# ------------------------------------------------------------------ colour-swapped hard negatives
class ColourVocab(ToyVocab):
    """ToyVocab with w1..w4 named as colours (the class word of _batches is one of them)."""

    def __init__(self):
        super().__init__()
        self.itos[1:5] = ["red", "green", "blue", "grey"]
        self.stoi = {w: i for i, w in enumerate(self.itos)}


def test_colour_swap_changes_one_colour_word_in_ids_and_text():
    from t2i.structures import CaptionBatch
    from t2i.training.negatives import colour_swapped_captions, colour_token_ids

    vocab = ColourVocab()
    ids_of = colour_token_ids(vocab)
    assert ids_of == {1: "red", 2: "green", 3: "blue", 4: "grey"}
    texts = ["a red bird with blue wings", "a green crown", "a small bird"]
    ids = torch.tensor([[9, 1, 8, 7, 3, 6], [9, 2, 5, 0, 0, 0], [9, 8, 7, 0, 0, 0]])
    caps = CaptionBatch(ids, torch.tensor([6, 3, 3]), texts)
    neg, valid = colour_swapped_captions(caps, ids_of, 3, torch.Generator().manual_seed(0))
    assert neg.ids.shape == (9, 6) and neg.lengths.tolist() == [6, 6, 6, 3, 3, 3, 3, 3, 3]
    assert valid.tolist() == [[True] * 3, [True] * 3, [False] * 3]  # the third caption names no colour
    for i in range(2):
        for j in range(3):
            row = neg.ids[i * 3 + j]
            changed = (row != ids[i]).nonzero().flatten().tolist()
            assert len(changed) == 1 and int(ids[i, changed[0]]) in ids_of and int(row[changed[0]]) in ids_of
            new = ids_of[int(row[changed[0]])]
            assert new != ids_of[int(ids[i, changed[0]])]
            assert new in neg.texts[i * 3 + j].split() and neg.texts[i * 3 + j] != texts[i]
            assert len(neg.texts[i * 3 + j].split()) == len(texts[i].split())
    assert torch.equal(neg.ids[6:], ids[2:].repeat(3, 1)) and neg.texts[6:] == [texts[2]] * 3
    again, _ = colour_swapped_captions(caps, ids_of, 3, torch.Generator().manual_seed(0))
    assert torch.equal(again.ids, neg.ids)  # drawn from the generator only


def test_hard_negatives_add_to_the_loss_and_train(tmp_path):
    train = _batches(6)
    plain = _trainer(tmp_path / "plain", train, vocab=ColourVocab())
    hard = _trainer(tmp_path / "hard", train, vocab=ColourVocab(), hard_negatives=2)
    for a, b in zip(plain.text_encoder.state_dict().values(), hard.text_encoder.state_dict().values()):
        assert torch.equal(a, b)  # same start
    batch = train[0]
    with torch.no_grad():
        hard.text_encoder.eval(), hard.image_encoder.eval()
        base = hard.compute_loss(batch)
        extra = hard.compute_loss(batch, negatives=True)
    # the negatives add columns to each image's row: both i2t losses grow, the t2i ones do not change
    assert extra.sent_i2t > base.sent_i2t and extra.word_i2t > base.word_i2t
    assert torch.allclose(extra.sent_t2i, base.sent_t2i) and torch.allclose(extra.word_t2i, base.word_t2i)
    first = hard.train_step(batch)["loss/total"]
    assert first == pytest.approx(plain.train_step(batch)["loss/total"] + (extra.loss - base.loss).item(), rel=0.05)
    for b in train[1:]:
        hard.train_step(b)
    assert math.isfinite(hard.train_step(train[0])["loss/total"])
    from t2i.errors import ConfigError

    with pytest.raises(ConfigError, match="model.hard_negatives=1 needs a vocabulary with at least two colour"):
        _trainer(tmp_path / "none", train, hard_negatives=1)  # ToyVocab has no colours

"""GANTrainer: steps change parameters with finite losses, resume is exact, NaN stops cleanly, export generates."""

from __future__ import annotations

import json

import pytest
import torch

from t2i.data.text import Vocabulary
from t2i.errors import CaptionError, CheckpointError, TrainingError
from t2i.losses.gan import GANLoss, mismatch_index
from t2i.models.factory import build_from_spec, make_spec
from t2i.models.image_encoders import LightImageEncoder
from t2i.pipeline import Text2ImagePipeline
from t2i.runtime import Precision
from t2i.io import load_checkpoint
from t2i.models.layers import UpBlock
from t2i.training.gan import GANTrainer, GANTrainerSettings, Phase
from tiny_gan import WORDS, tiny_batches

def tiny_models(stages=("init", "attention"), base=32):
    vocab = Vocabulary(WORDS)
    text_spec = make_spec("t2i.models.text_encoders.RNNTextEncoder", vocab_size=len(vocab), word_dim=8,
                          hidden_dim=4, dropout=0.0)
    text_encoder = build_from_spec(text_spec)
    gen_spec = make_spec("t2i.models.generator.MultiStageGenerator", stages=list(stages), ngf=4, z_dim=6, c_dim=5,
                         sent_dim=8, word_dim=8, res_blocks=1, base_size=base)
    generator = build_from_spec(gen_spec)
    d_specs = [make_spec("t2i.models.discriminator.StageDiscriminator", resolution=r, ndf=4, cond_dim=8)
               for r in generator.resolutions]
    discriminators = torch.nn.ModuleList(build_from_spec(s) for s in d_specs)
    spec = {"name": "tiny", "z_dim": 6, "words_num": 6, "generator": gen_spec, "discriminators": d_specs,
            "text_encoder": text_spec}
    return vocab, text_encoder, generator, discriminators, spec


def make_trainer(tmp_path, lambda_damsm=1.0, max_steps=2, phases=None, lr=2e-4, stages=("init", "attention")):
    torch.manual_seed(0)
    vocab, text_encoder, generator, discriminators, spec = tiny_models(stages)
    image_encoder = LightImageEncoder(embed_dim=8, width=4, image_size=32) if lambda_damsm else None
    loss = GANLoss(image_encoder=image_encoder, lambda_damsm=lambda_damsm)
    settings = GANTrainerSettings(max_steps=max_steps, z_dim=6, log_every=1, image_every=1000, ckpt_every=1000,
                                  resume="never", phases=phases, lr_g=lr, lr_d=lr)
    return GANTrainer(generator, discriminators, text_encoder, loss, tiny_batches(), tmp_path / "run", settings,
                      Precision("fp32", torch.device("cpu")), torch.device("cpu"), model_spec=spec,
                      vocab=vocab.to_dict())


def test_two_steps_change_parameters_and_keep_losses_finite(tmp_path):
    trainer = make_trainer(tmp_path)
    before_g = [p.detach().clone() for p in trainer.generator.parameters()]
    before_d = [p.detach().clone() for p in trainer.discriminators.parameters()]
    before_text = [p.detach().clone() for p in trainer.text_encoder.parameters()]
    logs = [trainer.train_step(b) for b in tiny_batches()]
    assert all(torch.isfinite(torch.tensor(v)) for log in logs for v in log.values())
    assert {"g/adv1", "g/adv2", "g/damsm_word", "g/damsm_sent", "g/kl", "d1/total", "d2/total"} <= set(logs[0])
    changed_g = sum(not torch.equal(a, b) for a, b in zip(before_g, trainer.generator.parameters()))
    changed_d = sum(not torch.equal(a, b) for a, b in zip(before_d, trainer.discriminators.parameters()))
    assert changed_g > 0.9 * len(before_g) and changed_d > 0.9 * len(before_d)
    # the DAMSM text encoder is frozen
    assert all(torch.equal(a, b) for a, b in zip(before_text, trainer.text_encoder.parameters()))
    # EMA moved towards G but is not G
    p, p_ema = next(trainer.generator.parameters()), next(trainer.ema.shadow.parameters())
    assert not torch.equal(p, p_ema)


def test_save_then_resume_gives_identical_state(tmp_path):
    a = make_trainer(tmp_path / "a", max_steps=4)
    for batch in tiny_batches()[:2]:
        a.train_step(batch)
    path = a.save()
    b = make_trainer(tmp_path / "b", max_steps=4)
    b.load(path)
    assert b.step == 2
    for batch in tiny_batches(seed=1):
        torch.manual_seed(5)
        la = a.train_step(batch)
        torch.manual_seed(5)
        lb = b.train_step(batch)
        assert la == pytest.approx(lb, rel=1e-6, abs=1e-7)
    for pa, pb in zip(a.state()["generator"].values(), b.state()["generator"].values()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    a = make_trainer(tmp_path)
    a.model_spec = {**a.model_spec, "name": "other"}
    path = a.save()
    b = make_trainer(tmp_path / "b")
    with pytest.raises(CheckpointError, match="model 'other'"):
        b.load(path)


def test_nan_loss_stops_with_clear_error_and_keeps_last_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.train_step(tiny_batches()[0])
    path = trainer.save()
    saved = path.read_bytes()
    with torch.no_grad():
        next(trainer.discriminators[0].parameters()).fill_(float("nan"))
    with pytest.raises(TrainingError, match="last good checkpoint"):
        trainer.train_step(tiny_batches()[1])
    assert path.read_bytes() == saved


def test_phases_freeze_earlier_stages(tmp_path):
    trainer = make_trainer(tmp_path, lambda_damsm=0.0, max_steps=4, phases=[Phase(1, [0]), Phase(3, [1])])
    assert trainer.active_stages(0) == [0] and trainer.active_stages(1) == [1] and trainer.active_stages(9) == [1]
    batches = tiny_batches()
    trainer.train_step(batches[0])
    d2_before = [p.detach().clone() for p in trainer.discriminators[1].parameters()]
    stage0 = [p.detach().clone() for p in trainer.generator.stages[0].parameters()]
    logs = trainer.train_step(batches[1])
    assert "g/adv1" not in logs and "g/adv2" in logs
    assert all(torch.equal(a, b) for a, b in zip(stage0, trainer.generator.stages[0].parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d2_before, trainer.discriminators[1].parameters()))


def test_stackgan_learning_rate_halves_every_decay_span_of_a_phase(tmp_path):
    trainer = make_trainer(tmp_path, lambda_damsm=0.0, max_steps=4, phases=[Phase(5, [0]), Phase(5, [1])], lr=1e-3)
    trainer.settings.lr_decay_steps = 2
    # phase 1: steps 0-4 -> 1, 1, 1/2, 1/2, 1/4; phase 2 restarts the count (Stage-II is a new run in StackGAN)
    expected = [1, 1, 0.5, 0.5, 0.25, 1, 1, 0.5, 0.5, 0.25, 0.25]
    assert [trainer.learning_rates(step)[0] / 1e-3 for step in range(11)] == expected
    assert trainer.learning_rates(3) == (5e-4, 5e-4)
    trainer.step = 2
    trainer.train_step(tiny_batches()[0])
    assert trainer.opt_g.param_groups[0]["lr"] == 5e-4 and trainer.opt_d[0].param_groups[0]["lr"] == 5e-4
    trainer.settings.lr_decay_steps = None
    assert trainer.learning_rates(7) == (1e-3, 1e-3)


def test_fit_exports_a_model_the_pipeline_generates_from(tmp_path, caplog):
    trainer = make_trainer(tmp_path, max_steps=3)
    export = trainer.fit()
    meta = json.loads((export / "model.json").read_text())
    assert meta["kind"] == "gan" and meta["step"] == 3
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt", "gan")["step"] == 3
    pipe = Text2ImagePipeline.from_export(export)
    out = pipe(["a green crown bird", "small red wing"], num_images=2, seed=3)
    assert out.images.shape == (4, 3, 64, 64) and out.images.abs().max() <= 1
    assert [im.shape[-1] for im in out.stage_images] == [32, 64]
    assert out.attn_maps[0].shape[:2] == (4, 4)
    # padding positions get no attention; weights sum to 1 over words
    torch.testing.assert_close(out.attn_maps[0][0].sum(0), torch.ones(32, 32))
    again = pipe(["a green crown bird", "small red wing"], num_images=2, seed=3)
    assert torch.equal(out.images, again.images)
    # the pipeline folds BatchNorm into the convs; the unfolded generator draws the same images
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in pipe.generator.modules())
    unfolded = Text2ImagePipeline.from_export(export, fold_bn=False)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in unfolded.generator.modules())
    torch.testing.assert_close(unfolded(["a green crown bird", "small red wing"], num_images=2, seed=3).images,
                               out.images, atol=1e-4, rtol=1e-4)
    # unknown words are dropped with a warning, empty / all-unknown captions are refused
    with caplog.at_level("WARNING"):
        out = pipe("a zebra bird")
    assert out.words[0] == ["a", "bird"] and "zebra" in caplog.text
    with pytest.raises(CaptionError, match="no words"):
        pipe("  !! ")
    with pytest.raises(CaptionError, match="vocabulary"):
        pipe("zebra giraffe")
    inter = pipe.interpolate_captions("green crown", "red wing", steps=3)
    assert inter.images.shape[0] == 3
    noise = pipe.interpolate_noise("green crown", steps=3)
    assert noise.images.shape[0] == 3 and not torch.equal(noise.images[0], noise.images[-1])


def test_export_of_wrong_kind_or_broken_is_refused(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=1)
    export = trainer.fit()
    (export / "generator.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="generator.safetensors"):
        Text2ImagePipeline.from_export(export)
    with pytest.raises(CheckpointError, match="not an exported"):
        Text2ImagePipeline.from_export(tmp_path)


def test_mismatch_index_picks_another_class():
    ids = torch.tensor([0, 0, 1, 1, 2])
    idx = mismatch_index(ids)
    assert (ids[idx] != ids).all()
    assert mismatch_index(torch.tensor([3, 3])).tolist() == [1, 0]


def test_channels_last_bf16_step_matches_layout_and_stays_finite(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.settings.channels_last = True
    trainer.precision = Precision("bf16", torch.device("cpu"))
    for module in (trainer.generator, trainer.discriminators, trainer.loss):
        module.to(memory_format=torch.channels_last)
    logs = trainer.train_step(tiny_batches()[0])
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    conv = next(m for m in trainer.discriminators[0].modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def _trainer_with(tmp_path, precision="fp32", **fast):
    torch.manual_seed(0)
    vocab, text_encoder, generator, discriminators, spec = tiny_models()
    loss = GANLoss(image_encoder=LightImageEncoder(embed_dim=8, width=4, image_size=32), lambda_damsm=1.0)
    settings = GANTrainerSettings(max_steps=3, z_dim=6, resume="never", **fast)
    trainer = GANTrainer(generator, discriminators, text_encoder, loss, [], tmp_path, settings,
                         Precision(precision, torch.device("cpu")), torch.device("cpu"), model_spec=spec,
                         vocab=vocab.to_dict())
    return trainer


def test_fast_options_give_the_same_updated_parameters(tmp_path):
    """fast_damsm (folded, channels-last DAMSM image encoder), fused / foreach Adam and the multi-tensor EMA
    compute the same step as the plain per-tensor path: equal losses, weights, EMA and Adam moments."""
    plain = _trainer_with(tmp_path / "plain", fast_damsm=False, adam="loop")
    plain.ema.foreach = False
    fast = {adam: _trainer_with(tmp_path / adam, fast_damsm=True, adam=adam) for adam in ("fused", "foreach")}
    assert plain.loss.image_channels_last is False and fast["fused"].loss.image_channels_last is True
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast["fused"].loss.image_encoder.modules())
    for batch in tiny_batches(n_batches=3):
        torch.manual_seed(7)
        logs_plain = plain.train_step(batch)
        for trainer in fast.values():
            torch.manual_seed(7)
            assert trainer.train_step(batch) == pytest.approx(logs_plain, rel=1e-4, abs=1e-5)
    for trainer in fast.values():
        for a, b in [(plain.generator, trainer.generator), (plain.discriminators, trainer.discriminators),
                     (plain.ema.shadow, trainer.ema.shadow)]:
            for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
                assert torch.allclose(p.float(), q.float(), rtol=1e-4, atol=1e-6), name
        moments = [s["exp_avg_sq"] for s in trainer.opt_g.state.values()]
        assert all(torch.allclose(m, n, rtol=1e-4, atol=1e-10)
                   for m, n in zip([s["exp_avg_sq"] for s in plain.opt_g.state.values()], moments))
    # the parameters moved (the comparison above is not between two untouched models)
    torch.manual_seed(0)
    _, _, g0, _, _ = tiny_models()
    assert not torch.allclose(next(g0.parameters()), next(plain.generator.parameters()))


def test_transposed_upsampling_gives_the_same_step(tmp_path):
    """train.transposed_upsample: G's upsampling blocks as one transposed convolution give the same losses, weights
    (of G and D) and Adam moments as nearest upsampling + 3x3 convolution; auto turns it on on the CPU only."""
    direct = _trainer_with(tmp_path / "direct", transposed_upsample=False)
    folded = _trainer_with(tmp_path / "folded", transposed_upsample="true")
    blocks = [m for m in folded.generator.modules() if isinstance(m, UpBlock)]
    assert direct.transposed_upsampling == 0 and folded.transposed_upsampling == len(blocks) >= 3
    assert all(b.transposed for b in blocks) and not any(
        m.transposed for m in direct.generator.modules() if isinstance(m, UpBlock))
    assert _trainer_with(tmp_path / "auto").transposed_upsampling == len(blocks)  # auto on the CPU
    for batch in tiny_batches(n_batches=3):
        torch.manual_seed(7)
        logs_direct = direct.train_step(batch)
        torch.manual_seed(7)
        assert folded.train_step(batch) == pytest.approx(logs_direct, rel=1e-4, abs=1e-5)
    for a, b in [(direct.generator, folded.generator), (direct.discriminators, folded.discriminators),
                 (direct.ema.shadow, folded.ema.shadow)]:
        assert list(a.state_dict()) == list(b.state_dict())
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.allclose(p.float(), q.float(), rtol=1e-4, atol=2e-5), name
    for s, t in zip(direct.opt_g.state.values(), folded.opt_g.state.values()):
        assert torch.allclose(s["exp_avg_sq"], t["exp_avg_sq"], rtol=1e-3, atol=1e-12)
    with pytest.raises(ValueError, match="transposed_upsample='maybe'"):
        _trainer_with(tmp_path / "bad", transposed_upsample="maybe")


def test_unknown_adam_implementation_is_refused(tmp_path):
    with pytest.raises(ValueError, match="Adam implementation 'sgd'"):
        _trainer_with(tmp_path, adam="sgd")


def test_mode_seeking_adds_its_term_and_spreads_the_images_of_one_text(tmp_path):
    """With mode_seeking_weight > 0 the G loss is the plain one plus w x MSGAN's term (the rest of the step draws the
    same random numbers first), and descending on the term alone makes two noises give more different images."""
    from t2i.losses.gan import mode_seeking_loss

    plain, seeking = make_trainer(tmp_path / "a"), make_trainer(tmp_path / "b")
    seeking.loss.mode_seeking_weight = 3.0
    batch = tiny_batches(n_batches=1)[0]
    torch.manual_seed(5)
    logs_plain = plain.train_step(batch)
    torch.manual_seed(5)
    logs = seeking.train_step(batch)
    assert "g/mode_seeking" not in logs_plain and logs["g/mode_seeking"] > 0
    assert logs["g/adv2"] == pytest.approx(logs_plain["g/adv2"], rel=1e-5)
    assert logs["g/total"] == pytest.approx(logs_plain["g/total"] + 3.0 * logs["g/mode_seeking"], rel=1e-4)

    generator = seeking.generator
    text, _ = seeking.encode(batch)
    z1, z2 = torch.randn(len(batch), 6), torch.randn(len(batch), 6)

    def spread():
        with torch.no_grad():
            return (generator(z1, text).images[-1] - generator(z2, text).images[-1]).abs().mean().item()

    before = spread()
    opt = torch.optim.Adam(generator.parameters(), lr=1e-3)
    for _ in range(10):
        opt.zero_grad()
        mode_seeking_loss(generator(z1, text).images[-1], generator(z2, text).images[-1], z1, z2).backward()
        opt.step()
    assert spread() > 1.2 * before  # 0.46 -> 0.63 here (tanh images saturate)


def test_gemm_convolutions_give_the_same_step_as_onednn(tmp_path, monkeypatch):
    """train.gemm_conv: the discriminators' small convolutions as one GEMM give the same losses, weights and Adam
    moments as the plain NCHW step; auto follows the probe (in bf16 it probes bf16 calls), and stays off with
    channels-last."""
    import t2i.training.kernels as kernels
    from t2i.models.layers import GemmConv2d

    plain, gemm = _trainer_with(tmp_path / "plain", gemm_conv=False), _trainer_with(tmp_path / "gemm", gemm_conv="true")
    for batch in tiny_batches(n_batches=2):
        torch.manual_seed(7)
        logs_plain = plain.train_step(batch)
        torch.manual_seed(7)
        assert gemm.train_step(batch) == pytest.approx(logs_plain, rel=1e-4, abs=1e-5)
    assert plain.gemm_convs == {} and "discriminators.1.joint.0" in gemm.gemm_convs
    assert sum(isinstance(m, GemmConv2d) for m in gemm.discriminators.modules()) == len(gemm.gemm_convs) >= 6
    assert list(gemm.discriminators.state_dict()) == list(plain.discriminators.state_dict())
    # Adam divides by sqrt(v): the rounding of a near-zero gradient may move a weight by a few % of one update
    # (lr 2e-4), so the weights are compared at 2e-5 and the losses and second moments closely.
    for a, b in [(plain.discriminators, gemm.discriminators), (plain.generator, gemm.generator)]:
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.allclose(p.float(), q.float(), rtol=1e-4, atol=2e-5), name
    for opt_p, opt_g in zip(plain.opt_d, gemm.opt_d):
        for s, t in zip(opt_p.state.values(), opt_g.state.values()):
            assert torch.allclose(s["exp_avg_sq"], t["exp_avg_sq"], rtol=1e-4, atol=1e-12)
    # auto: the probe decides (here: the GEMM wins for 32 output channels only)
    probed = []
    monkeypatch.setattr(kernels, "probe_cached", lambda s: probed.append(s) or
                        ({"onednn": 1.0, "gemm": 0.5 if s.out_channels == 32 else 2.0}, True))
    auto = _trainer_with(tmp_path / "auto")
    assert auto.settings.gemm_conv == "auto"
    chosen = auto.choose_conv_kernels(tiny_batches()[0])
    assert chosen and all("gemm 500.0 ms" in why for why in chosen.values())
    assert probed and {s.precision for s in probed} == {"fp32"}
    probed.clear()
    bf16 = _trainer_with(tmp_path / "bf16", precision="bf16")
    assert list(bf16.choose_conv_kernels(tiny_batches()[0])) == list(chosen)
    assert probed and {s.precision for s in probed} == {"bf16"} and all(s.key().endswith(" bf16") for s in probed)
    off = _trainer_with(tmp_path / "cl", channels_last=True)
    assert off.choose_conv_kernels(tiny_batches()[0]) == {}
    with pytest.raises(ValueError, match="gemm_conv='fast'"):
        _trainer_with(tmp_path / "bad", gemm_conv="fast")

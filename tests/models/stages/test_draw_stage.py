"""DrawStage (``model=attngan_draw``): sizes, canvas start/end, gradients, masking, registration, config, trainer."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from t2i.errors import ConfigError
from t2i.models.draw import filterbank
from t2i.models.stages.draw import CANVAS_LIMIT, DrawStage, PriorAttentionWriter
from t2i.models.factory import build_from_spec, make_spec
from t2i.models.generator import MultiStageGenerator
from t2i.models.stages import STAGE_KINDS, StageContext, StageSpec
from t2i.structures import TextEmbedding

B, T, WORD, SENT = 2, 5, 12, 10
SMALL = {"steps": 3, "hidden_dim": 16, "write_n": 4}


def text(lengths=(5, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    words = torch.randn(B, T, WORD, generator=g)
    pad_mask = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]
    return TextEmbedding(words=words, sentence=torch.randn(B, SENT, generator=g), pad_mask=pad_mask)


def make(stages=("init", "draw"), draw=None, **kw):
    args = dict(ngf=4, z_dim=6, c_dim=5, sent_dim=SENT, word_dim=WORD, res_blocks=1, base_size=16,
                stage_options={"draw": dict(SMALL, **(draw or {}))})
    args.update(kw)
    torch.manual_seed(0)
    return MultiStageGenerator(list(stages), **args)


def context(prev, lengths=(5, 3), seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    return StageContext(z=torch.randn(B, 6, generator=g), c_code=torch.randn(B, 5, generator=g),
                        text=text(lengths, seed), images=[prev])


def test_every_shipped_kind_is_registered_by_importing_the_generator_or_one_stage_module():
    assert STAGE_KINDS["draw"] is DrawStage
    for first in ("t2i.models.generator", "t2i.models.stages.draw", "t2i.models.stages.base"):
        code = (f"import {first}; from t2i.models.stages import STAGE_KINDS; "
                f"from t2i.models.stages.draw import DrawStage; assert STAGE_KINDS['draw'] is DrawStage; "
                f"assert sorted(STAGE_KINDS) == ['attention', 'draw', 'init', 'joint', 'stackgan_stage1', "
                f"'stackgan_stage2'], sorted(STAGE_KINDS)")
        subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("stages, kw, draw, sizes", [
    (["init", "draw"], {}, {}, [16, 32]),
    (["init", "draw"], {"ngf": 2, "base_size": 8}, {"steps": 1, "write_n": 1, "noise_input": False}, [8, 16]),
    (["init", "attention", "draw"], {"base_size": 8}, {"write_n": 5}, [8, 16, 32]),
    (["init", "draw", "attention"], {}, {}, [16, 32, 64]),  # a stage may follow: features [up(h), image]
])
def test_output_sizes_and_canvases(stages, kw, draw, sizes):
    gen = make(stages, draw, **kw)
    assert gen.resolutions == sizes
    steps = dict(SMALL, **draw)["steps"]
    out = gen(torch.randn(B, 6), text())
    assert [tuple(im.shape) for im in out.images] == [(B, 3, s, s) for s in sizes]
    k = stages.index("draw")
    assert isinstance(gen.heads[k], torch.nn.Identity)  # the stage draws its own image
    assert gen.stages[k].out_channels == gen.stages[k - 1].out_channels + 3
    assert out.canvases.shape == (B, steps + 1, 3, sizes[k], sizes[k])
    assert out.canvases.abs().max() <= 1 and not out.canvases.requires_grad
    assert len(out.attn_maps) == stages.count("attention")  # the DRAW stage adds no per-pixel maps
    if k == len(stages) - 1:
        torch.testing.assert_close(out.canvases[:, -1], out.images[-1].detach())  # last canvas = image


def test_canvas_starts_at_upsampled_previous_image_and_ends_at_tanh_of_last_logits():
    stage = make().stages[1]
    prev = torch.rand(B, 3, 16, 16) * 2 - 1
    prev[0, 0, 0, 0], prev[1, 2, 3, 4] = 1.0, -1.0  # saturated pixels are clamped
    res = stage.draw(torch.randn(B, 4, 16, 16), context(prev))
    up = F.interpolate(prev, scale_factor=2, mode="bilinear", align_corners=False)
    assert res.canvas_logits.shape == (B, 4, 3, 32, 32)
    torch.testing.assert_close(torch.tanh(res.canvas_logits[:, 0]), up.clamp(-CANVAS_LIMIT, CANVAS_LIMIT))
    torch.testing.assert_close(res.image, torch.tanh(res.canvas_logits[:, -1]))
    # C_T = C_0 + sum of the writes: every step changed the canvas
    steps = res.canvas_logits.diff(dim=1)
    assert all(steps[:, t].abs().max() > 1e-4 for t in range(steps.shape[1]))


def test_writes_follow_draw_eq_29_with_the_window_prior():
    torch.manual_seed(0)
    writer = PriorAttentionWriter(hidden_dim=8, write_n=3, channels=3, canvas_size=20, window_span=0.5)
    h = torch.randn(2, 8)
    out, window = writer(h, 20, 20, return_window=True)
    params = writer.params(h) + writer.window_prior  # Eq. (21) + prior
    g_x = 21 / 2 * (params[:, 0] + 1)  # Eq. (22)
    delta = 19 / 2 * params[:, 3].exp()  # Eq. (24)
    f_x, f_y = filterbank(g_x, 21 / 2 * (params[:, 1] + 1), params[:, 2].exp(), delta, 3, 20, 20)
    w = writer.patch(h).view(2, 3, 3, 3)
    loop = torch.zeros(2, 3, 20, 20)
    for b in range(2):
        for c in range(3):
            loop[b, c] = f_y[b].T @ w[b, c] @ f_x[b] / params[b, 4].exp()  # Eq. (29): 1/gamma F_Y^T w F_X
    torch.testing.assert_close(out, loop)
    torch.testing.assert_close(window.g_x, g_x)
    # the prior alone: grid spans half the canvas, sigma = delta / 2, gamma = 1 / delta^2
    prior_delta = 19 / 2 * writer.window_prior[3].exp()
    assert math.isclose(3 * prior_delta.item(), 10.0, rel_tol=1e-5)
    assert math.isclose(writer.window_prior[2].exp().item(), (prior_delta.item() / 2) ** 2, rel_tol=1e-5)
    assert math.isclose(writer.window_prior[4].exp().item(), prior_delta.item() ** -2, rel_tol=1e-5)


def test_window_prior_and_step_codes_survive_the_generator_initialisation():
    stage = make().stages[1]
    fresh = PriorAttentionWriter(16, 4, 3, 32)
    torch.testing.assert_close(stage.writer.window_prior.detach(), fresh.window_prior.detach())
    codes = stage.step_codes.weight
    assert codes.shape == (3, 16) and 0.5 < codes.std() < 1.5  # N(0, 1), not orthogonalised


def test_without_step_codes_and_noise_the_lstm_input_is_summary_and_context():
    stage = make(draw={"step_embedding": False, "noise_input": False}).stages[1]
    assert stage.step_codes is None and stage.lstm.input_size == 2 * 16
    out = stage(torch.randn(B, 4, 16, 16), context(torch.zeros(B, 3, 16, 16)))
    assert out.image.shape == (B, 3, 32, 32)


def test_gradients_reach_writer_lstm_and_previous_stage():
    gen = make()
    out = gen(torch.randn(B, 6), text())
    out.images[-1].square().mean().backward()
    stage = gen.stages[1]
    for name, p in stage.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert stage.writer.params.weight.grad.abs().sum() > 0 and stage.writer.window_prior.grad.abs().sum() > 0
    assert stage.lstm.weight_ih.grad.abs().sum() > 0 and stage.lstm.weight_hh.grad.abs().sum() > 0
    assert all(p.grad is not None for p in gen.stages[0].parameters())  # joint training through C_0


def test_detach_prev_stops_the_gradient_into_the_previous_stage():
    gen = make(draw={"detach_prev": True})
    out = gen(torch.randn(B, 6), text())
    out.images[-1].mean().backward()
    assert gen.heads[0][0].weight.grad is None  # the previous image head gets nothing from the DRAW image
    assert gen.stages[1].writer.patch.weight.grad.abs().sum() > 0


def test_padding_words_get_zero_attention_and_word_attention_matches_a_loop():
    stage = make().stages[1].eval()
    ctx = context(torch.rand(B, 3, 16, 16) * 2 - 1, lengths=(5, 2))
    features = torch.randn(B, 4, 16, 16)
    res = stage.draw(features, ctx)
    assert res.word_attn.shape == (B, 3, T) and res.windows.shape == (B, 3, 3)
    assert torch.all(res.word_attn[1, :, 2:] == 0) and torch.all(res.word_attn[0] > 0)
    torch.testing.assert_close(res.word_attn.sum(-1), torch.ones(B, 3))
    torch.testing.assert_close(res.word_attn[1, 0, :2], torch.full((2,), 0.5))  # h_0 = 0: uniform
    # independent recurrence: beta_t = softmax(h_{t-1}^T U e) over real words
    keys = ctx.text.words @ stage.project_words.weight.T  # (B, T, hidden)
    summary = stage.summary(features.mean((2, 3)))
    for b in range(B):
        n = int((~ctx.text.pad_mask[b]).sum())
        h = c = torch.zeros(1, 16)
        for t in range(3):
            beta = torch.softmax(keys[b, :n] @ h[0], 0)
            torch.testing.assert_close(res.word_attn[b, t, :n], beta)
            x = torch.cat([summary[b], beta @ keys[b, :n], stage.step_codes.weight[t], ctx.c_code[b], ctx.z[b]])[None]
            h, c = stage.lstm(x, (h, c))


def test_padding_words_do_not_change_the_image():
    stage = make().stages[1].eval()
    prev, features = torch.rand(B, 3, 16, 16) * 2 - 1, torch.randn(B, 4, 16, 16)
    ctx = context(prev, lengths=(5, 2))
    other = context(prev, lengths=(5, 2))
    other.text.words[1, 2:] = 100.0  # garbage under the padding
    torch.testing.assert_close(stage.draw(features, ctx).canvas_logits, stage.draw(features, other).canvas_logits)


def test_writes_land_at_different_places_over_the_steps():
    gen = make(draw={"steps": 8, "hidden_dim": 32, "write_n": 6}).eval()
    out = gen(torch.randn(B, 6), text(), sample=False)
    stage = gen.stages[1]
    ctx = context(out.images[0])
    res = stage.draw(torch.randn(B, 4, 16, 16), ctx)
    centres = res.windows[..., :2]  # (B, steps, 2)
    spread = centres.std(dim=1)  # over the steps
    assert torch.all(spread > 0.1), spread
    where = res.canvas_logits.diff(dim=1).abs().sum(2)  # (B, steps, H, W) how much each step wrote where
    peaks = where.flatten(2).argmax(-1)
    assert len(set(peaks[0].tolist())) > 1


def test_construction_errors():
    with pytest.raises(ConfigError, match="first stage must be an initial kind"):
        make(["draw"])
    spec = StageSpec(index=0, kind="draw", in_channels=None, in_size=None, ngf=4, z_dim=6, c_dim=5, sent_dim=SENT,
                     word_dim=WORD, res_blocks=1, base_size=16)
    with pytest.raises(ConfigError, match="needs a stage before it"):
        DrawStage.from_spec(spec)
    with pytest.raises(ConfigError, match="word_dim"):
        make(word_dim=None)
    with pytest.raises(ConfigError, match="write_n"):
        make(draw={"write_n": 64})
    with pytest.raises(ConfigError, match="steps"):
        make(draw={"steps": 0})


def test_builds_from_a_spec_like_a_checkpoint():
    spec = make_spec("t2i.models.generator.MultiStageGenerator", stages=["init", "draw"], ngf=4, z_dim=6, c_dim=5,
                     sent_dim=SENT, word_dim=WORD, res_blocks=1, base_size=16, stage_options={"draw": SMALL})
    torch.manual_seed(0)
    gen = build_from_spec(spec)
    assert isinstance(gen.stages[1], DrawStage) and gen.stages[1].steps == 3
    gen.load_state_dict(make().state_dict(), strict=True)
    out = gen.eval()(torch.randn(B, 6), text(), sample=False)
    assert out.canvases.shape == (B, 4, 3, 32, 32)


def test_config_composes_and_builds():
    from t2i.config import compose
    from t2i.models.text_encoders import RNNTextEncoder
    from t2i.recipes.gan import build_models

    cfg = compose("train", ["model=attngan_draw"])
    assert cfg.model.name == "attngan_draw" and cfg.model.family == "gan"
    assert list(cfg.model.generator.stages) == ["init", "draw"]
    with torch.device("meta"):
        generator, discriminators, spec = build_models(cfg, RNNTextEncoder(vocab_size=20, word_dim=16, hidden_dim=8))
    assert generator.resolutions == [64, 128] and len(discriminators) == 2
    stage = generator.stages[1]
    assert isinstance(stage, DrawStage) and stage.steps == 12 and stage.writer.write_n == 12
    assert spec["generator"]["kwargs"]["stage_options"]["draw"]["hidden_dim"] == 128


def test_one_gan_trainer_step(tmp_path):
    from tiny_gan import WORDS, tiny_batches

    from t2i.data.text import Vocabulary
    from t2i.losses.gan import GANLoss
    from t2i.runtime import Precision
    from t2i.training.gan import GANTrainer, GANTrainerSettings

    torch.manual_seed(0)
    vocab = Vocabulary(WORDS)
    text_spec = make_spec("t2i.models.text_encoders.RNNTextEncoder", vocab_size=len(vocab), word_dim=8,
                          hidden_dim=4, dropout=0.0)
    gen_spec = make_spec("t2i.models.generator.MultiStageGenerator", stages=["init", "draw"], ngf=4, z_dim=6,
                         c_dim=5, sent_dim=8, word_dim=8, res_blocks=1, base_size=32, stage_options={"draw": SMALL})
    generator = build_from_spec(gen_spec)
    d_specs = [make_spec("t2i.models.discriminator.StageDiscriminator", resolution=r, ndf=4, cond_dim=8)
               for r in generator.resolutions]
    spec = {"name": "tiny", "z_dim": 6, "words_num": 6, "generator": gen_spec, "discriminators": d_specs,
            "text_encoder": text_spec}
    settings = GANTrainerSettings(max_steps=1, z_dim=6, log_every=1, image_every=1000, ckpt_every=1000,
                                  resume="never")
    trainer = GANTrainer(generator, torch.nn.ModuleList(build_from_spec(s) for s in d_specs),
                         build_from_spec(text_spec), GANLoss(image_encoder=None, lambda_damsm=0.0), tiny_batches(),
                         tmp_path / "run", settings, Precision("fp32", torch.device("cpu")), torch.device("cpu"),
                         model_spec=spec, vocab=vocab.to_dict())
    writer_before = trainer.generator.stages[1].writer.patch.weight.detach().clone()
    log = trainer.train_step(tiny_batches()[0])
    assert {"g/adv1", "g/adv2", "d1/total", "d2/total"} <= set(log)
    assert all(math.isfinite(v) for v in log.values())
    assert not torch.equal(writer_before, trainer.generator.stages[1].writer.patch.weight)
    with torch.no_grad():
        out = trainer.generator.eval()(torch.randn(4, 6), trainer.encode(tiny_batches()[0].to("cpu"))[0])
    assert out.canvases.shape == (4, 4, 3, 64, 64) and torch.isfinite(out.canvases).all()

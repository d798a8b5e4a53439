"""DRAW trainer: steps, held-out bound, checkpoints and resume, canvas images, recipe wiring."""

import math

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from t2i.errors import CheckpointError, TrainingError
from t2i.losses.draw import draw_elbo
from t2i.models.aligndraw import AlignDRAW
from t2i.models.draw import DRAW
from t2i.structures import Batch
from t2i.io import load_checkpoint
from t2i.training.draw import DrawTrainer, batch_inputs
from t2i.visualize import canvas_sheet, save_canvas_gif, save_image

SPEC = {"target": "t2i.models.draw.DRAW",
        "kwargs": dict(height=8, width=8, steps=3, z_dim=4, enc_dim=16, dec_dim=16, read_n=2, write_n=3)}


def _data(n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 1, 8, 8, generator=gen) > 0.6).float()
    return TensorDataset(images, torch.zeros(n, dtype=torch.long))


def _trainer(tmp_path, **kw):
    torch.manual_seed(0)
    model = DRAW(**SPEC["kwargs"])
    train = DataLoader(_data(), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    test = DataLoader(_data(8, seed=1), batch_size=4)
    args = dict(run_dir=tmp_path / "run", model_spec=SPEC, max_steps=6, log_every=2, eval_every=3, image_every=0,
                ckpt_every=3, num_samples=4, tensorboard=False, progress=False)
    args.update(kw)
    return DrawTrainer(model, train, test, **args)


def test_train_evaluate_and_images(tmp_path):
    trainer = _trainer(tmp_path, tensorboard=True)
    final = trainer.train()
    assert trainer.step == 6 and [h["step"] for h in trainer.history] == [3, 6, 6]
    assert final["images"] == 8 and final["nll_bound"] == pytest.approx(final["recon"] + final["kl"])
    # The held-out bound equals an independent pass with the same noise seed.
    trainer.model.eval()
    torch.manual_seed(trainer.seed)
    total = 0.0
    for x, _ in trainer.test_loader:
        out = trainer.model(x)
        total += draw_elbo(x, out.canvas_logits, out.mu, out.logvar).total.sum().item()
    assert final["nll_bound"] == pytest.approx(total / 8, rel=1e-5)
    strip = Image.open(tmp_path / "run" / "images" / "samples_final.png")
    assert strip.size == (3 * 9 + 1, 4 * 9 + 1)  # 3 steps x 4 samples of 8 px, 1 px padding
    gif = Image.open(tmp_path / "run" / "images" / "samples_final.gif")
    assert gif.n_frames == 3
    assert any((tmp_path / "run" / "tb").iterdir())


def test_checkpoint_resume(tmp_path):
    first = _trainer(tmp_path, max_steps=3, ckpt_every=3)
    first.train()
    data = load_checkpoint(tmp_path / "run" / "checkpoint.pt", "draw")
    assert data["step"] == 3 and data["model_spec"] == SPEC and len(data["history"]) == 2
    resumed = _trainer(tmp_path, max_steps=5)
    assert resumed.step == 3 and len(resumed.history) == 2
    for (name, a), b in zip(first.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    exp_avg = [s["exp_avg"] for s in first.optimizer.state_dict()["state"].values()]
    exp_avg_resumed = [s["exp_avg"] for s in resumed.optimizer.state_dict()["state"].values()]
    for a, b in zip(exp_avg, exp_avg_resumed):
        torch.testing.assert_close(a, b)
    resumed.train()
    assert resumed.step == 5 and load_checkpoint(tmp_path / "run" / "checkpoint.pt", "draw")["step"] == 5
    with pytest.raises(CheckpointError, match="'draw' checkpoint, but a 'gan'"):
        load_checkpoint(tmp_path / "run" / "checkpoint.pt", "gan")
    other = DrawTrainer(DRAW(height=8, width=8, steps=3, z_dim=5, enc_dim=16, dec_dim=16), [], None,
                        run_dir=tmp_path / "x", tensorboard=False, progress=False)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        other.load(tmp_path / "run" / "checkpoint.pt")


def test_non_finite_loss_raises(tmp_path):
    trainer = _trainer(tmp_path)
    with torch.no_grad():
        trainer.model.writer.patch.bias.fill_(float("nan"))
    with pytest.raises(TrainingError, match="non-finite"):
        trainer.train_step(next(iter(trainer.train_loader)))


def test_gradient_clip_per_tensor(tmp_path):
    trainer = _trainer(tmp_path, grad_clip=1e-3, lr=0.0)
    trainer.train_step(next(iter(trainer.train_loader)))
    norms = [p.grad.norm().item() for p in trainer.model.parameters() if p.grad is not None]
    assert max(norms) <= 1e-3 * (1 + 1e-4)


def test_canvas_helpers_rgb(tmp_path):
    canvases = torch.rand(2, 5, 3, 6, 7) * 2 - 1
    png = save_image(canvas_sheet(canvases), tmp_path / "s.png")
    assert Image.open(png).size == (5 * 8 + 1, 2 * 7 + 1)
    assert Image.open(save_canvas_gif(canvases, tmp_path / "s.gif", scale=1)).n_frames == 5
    assert Image.open(save_image(canvas_sheet(canvases[0]), tmp_path / "one.png")).size == (5 * 8 + 1, 8)


def test_batch_inputs_and_aligndraw_training_step(tmp_path):
    images = torch.rand(4, 3, 8, 8) * 2 - 1
    batch = Batch(images=[images], captions=torch.tensor([[3, 4, 5], [6, 7, 0], [8, 0, 0], [9, 3, 4]]),
                  lengths=torch.tensor([3, 2, 1, 3]), class_ids=torch.arange(4))
    x, cond = batch_inputs(batch, torch.device("cpu"))
    torch.testing.assert_close(x, (images + 1) / 2)
    assert set(cond) == {"captions", "lengths"}
    torch.manual_seed(0)
    model = AlignDRAW(vocab_size=12, height=8, width=8, steps=2, z_dim=3, enc_dim=8, dec_dim=8, read_n=2,
                      write_n=2, word_dim=4, lang_dim=4, align_dim=4)
    trainer = DrawTrainer(model, [batch], None, run_dir=tmp_path, max_steps=2, log_every=1, eval_every=0,
                          image_every=0, ckpt_every=0, sample_cond={"captions": batch.captions, "lengths": batch.lengths},
                          tensorboard=False, progress=False)
    stats = trainer.train()
    assert set(stats) == {"loss", "recon", "kl"} and math.isfinite(stats["loss"])
    assert Image.open(tmp_path / "images" / "samples_final.png").size == (2 * 9 + 1, 4 * 9 + 1)


def test_recipe_trains_draw_on_mnist(tmp_path):
    from t2i.recipes.draw import train
    from t2i.config import compose
    cfg = compose("train", ["model=draw", "data=mnist", "device=cpu", f"run_dir={tmp_path / 'run'}",
                            "train.precision=fp32", "train.batch_size=16", "train.max_steps=2", "train.log_every=1",
                            "train.image_every=0", "train.ckpt_every=0", "data.dataset.num_train=32",
                            "data.dataset.num_test=16", "model.net.steps=2", "model.net.z_dim=3", "model.net.enc_dim=8",
                            "model.net.dec_dim=8", "model.net.read_n=2", "model.net.write_n=2", "model.eval_every=0",
                            "model.num_samples=2"])
    final = train(cfg)
    assert final["images"] == 16 and final["nll_bound"] > 0
    data = load_checkpoint(tmp_path / "run" / "checkpoint.pt", "draw")
    assert data["model_spec"]["kwargs"]["height"] == 28 and data["step"] == 2
    cfg.model.name = "aligndraw"
    with pytest.raises(Exception, match="not data=mnist"):
        train(cfg)


def test_aligndraw_export_generates_through_the_pipeline(tmp_path):
    """alignDRAW trained for a step exports a model that tools/generate.py's pipeline draws captions with."""
    from t2i.data.text import Vocabulary
    from t2i.models.factory import build_from_spec, make_spec
    from t2i.pipeline import Text2ImagePipeline
    from t2i.structures import Batch
    from t2i.training.draw import DrawTrainer

    vocab = Vocabulary(["a", "green", "crown", "bird"])
    spec = make_spec("t2i.models.aligndraw.AlignDRAW", vocab_size=len(vocab), height=8, width=8, channels=3,
                     steps=3, z_dim=4, enc_dim=8, dec_dim=8, read_n=2, write_n=2, word_dim=6, lang_dim=4,
                     align_dim=5)
    caps = torch.tensor([[1, 2, 3], [4, 2, 0]])
    batch = Batch(images=[torch.rand(2, 3, 8, 8) * 2 - 1], captions=caps, lengths=torch.tensor([3, 2]),
                  class_ids=torch.tensor([0, 1]))
    trainer = DrawTrainer(build_from_spec(spec), [batch], None, run_dir=tmp_path, model_spec=spec,
                          vocab=vocab.to_dict(), max_steps=1, tensorboard=False, progress=False, image_every=0,
                          eval_every=0, ckpt_every=0, sample_cond={"captions": caps, "lengths": batch.lengths})
    trainer.train()
    export = trainer.export(words_num=5)
    pipe = Text2ImagePipeline.from_export(export)
    out = pipe(["a green crown bird"], num_images=2, seed=1)
    assert out.images.shape == (2, 3, 8, 8) and out.canvases.shape == (2, 3, 3, 8, 8)
    assert out.images.min() >= -1 and out.images.max() <= 1
    assert torch.equal(out.images, pipe(["a green crown bird"], num_images=2, seed=1).images)

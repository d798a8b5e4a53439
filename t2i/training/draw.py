"""Trainer for DRAW and alignDRAW: maximise the ELBO, report the held-out NLL bound in nats.

Optimisation follows ericjang/draw (the DRAW reference implementation most ports follow): Adam with
learning rate 1e-3 and beta1 = 0.5, every gradient tensor clipped to norm 5. Checkpoints (kind ``draw``)
hold the model spec, weights, optimiser, step and RNG state, written atomically; canvas progressions are
written as a PNG strip (rows: samples, columns: steps) and an animated GIF.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor, nn

from t2i.errors import TrainingError
from t2i.export import write_export
from t2i.io import load_checkpoint, load_state_dict_strict, save_checkpoint, start_over
from t2i.losses.draw import ElboTerms, draw_elbo
from t2i.runtime import rng_state, set_rng_state
from t2i.structures import Batch
from t2i.visualize import canvas_sheet, save_canvas_gif, save_image

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "draw"


def batch_inputs(batch: Any, device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
    """Targets in [0, 1] and the model's conditioning arguments from a data-loader batch.

    A :class:`t2i.structures.Batch` (captioned images in [-1, 1]) gives ``x = (images[-1] + 1) / 2`` and
    ``captions``/``lengths``; an ``(images, labels)`` pair or a tensor gives unconditional images in [0, 1].
    """
    if isinstance(batch, Batch):
        x = (batch.images[-1].to(device) + 1) / 2
        return x, {"captions": batch.captions.to(device), "lengths": batch.lengths.to(device)}
    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    return x.to(device), {}


def _cycle(loader: Iterable) -> Iterator:
    while True:
        yield from loader


class DrawTrainer:
    """Train a :class:`~t2i.models.draw.DRAW` or :class:`~t2i.models.aligndraw.AlignDRAW`.

    Args:
        model: the model (``forward(x, **cond) -> DrawOutput``).
        train_loader: batches (see :func:`batch_inputs`).
        test_loader: held-out batches for the NLL bound, or None.
        run_dir: checkpoints, TensorBoard logs and canvas images go here.
        model_spec: ``{"target", "kwargs"}`` to rebuild the model (stored in checkpoints).
        config: resolved plain config (stored in checkpoints).
        vocab: vocabulary dict for alignDRAW checkpoints, or None.
        lr, betas: Adam settings (reference: 1e-3, (0.5, 0.999)).
        grad_clip: per-tensor gradient norm clip (reference: 5); None or 0 disables.
        likelihood, gaussian_std: reconstruction model (see :func:`t2i.losses.draw.draw_elbo`).
        max_steps: optimisation steps.
        log_every, eval_every, image_every, ckpt_every: intervals in steps (0 disables).
        sample_cond: conditioning for sample images (alignDRAW captions/lengths), or None.
        num_samples: images per canvas strip.
        device: torch device.
        resume: continue from ``run_dir/checkpoint.pt`` when it exists.
        tensorboard, progress: write TensorBoard events; show a tqdm bar.
        seed: seed of the evaluation noise.
    """

    def __init__(self, model: nn.Module, train_loader: Iterable, test_loader: Iterable | None = None,
                 run_dir: str | Path = "runs/draw", model_spec: dict | None = None, config: dict | None = None,
                 vocab: dict | None = None, lr: float = 1e-3, betas: tuple[float, float] = (0.5, 0.999),
                 grad_clip: float | None = 5.0, likelihood: str = "bernoulli", gaussian_std: float = 0.1,
                 max_steps: int = 1000, log_every: int = 50, eval_every: int = 500, image_every: int = 500,
                 ckpt_every: int = 500, sample_cond: dict[str, Tensor] | None = None, num_samples: int = 16,
                 device: str | torch.device = "cpu", resume: bool = True, tensorboard: bool = True,
                 progress: bool = True, seed: int = 0):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.train_loader, self.test_loader = train_loader, test_loader
        self.run_dir = Path(run_dir)
        self.model_spec, self.config, self.vocab = model_spec, config, vocab
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr, betas=tuple(betas))
        self.grad_clip = grad_clip
        self.likelihood, self.gaussian_std = likelihood, gaussian_std
        self.max_steps = max_steps
        self.log_every, self.eval_every = log_every, eval_every
        self.image_every, self.ckpt_every = image_every, ckpt_every
        self.sample_cond = sample_cond
        self.num_samples = num_samples
        self.progress, self.seed = progress, seed
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.run_dir / "tb"))
        if resume and self.checkpoint_path.is_file():
            self.load(self.checkpoint_path)
        elif not resume:
            start_over(self.checkpoint_path)

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def elbo(self, batch: Any) -> ElboTerms:
        """Negative ELBO terms of one batch (per image, nats)."""
        x, cond = batch_inputs(batch, self.device)
        out = self.model(x, **cond)
        return draw_elbo(x, out.canvas_logits, out.mu, out.logvar, out.prior_mu, out.prior_logvar,
                         self.likelihood, self.gaussian_std)

    def train_step(self, batch: Any) -> dict[str, float]:
        """One Adam step on the batch's mean negative ELBO."""
        self.model.train()
        # (1) forward: negative ELBO, DRAW Eq. (12)
        terms = self.elbo(batch)
        loss = terms.loss
        if not torch.isfinite(loss):
            raise TrainingError(f"non-finite DRAW loss at step {self.step}; lower train lr or grad_clip "
                                f"(last good checkpoint: {self.checkpoint_path})")
        # (2) backward, clip each gradient tensor as ericjang/draw, update
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            for p in self.model.parameters():
                if p.grad is not None:
                    torch.nn.utils.clip_grad_norm_([p], self.grad_clip)
        self.optimizer.step()
        self.step += 1
        return {"loss": loss.item(), "recon": terms.recon.mean().item(), "kl": terms.kl.mean().item()}

    @torch.no_grad()
    def evaluate(self, loader: Iterable | None = None) -> dict[str, float]:
        """Held-out negative ELBO (the NLL upper bound) in nats per image, with fixed latent noise.

        Returns:
            ``{"nll_bound", "recon", "kl", "images"}``; empty when there is no loader.
        """
        loader = loader if loader is not None else self.test_loader
        if loader is None:
            return {}
        self.model.eval()
        totals = torch.zeros(3, dtype=torch.float64)
        count = 0
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            for batch in loader:
                terms = self.elbo(batch)
                totals += torch.stack([terms.total.sum(), terms.recon.sum(), terms.kl.sum()]).double().cpu()
                count += terms.total.shape[0]
        self.model.train()
        nll, recon, kl = (totals / max(count, 1)).tolist()
        return {"nll_bound": nll, "recon": recon, "kl": kl, "images": count}

    @torch.no_grad()
    def sample_canvases(self) -> Tensor:
        """``[N, T, C, H, W]`` canvas progressions sampled from the prior."""
        gen = torch.Generator(device=self.device).manual_seed(self.seed)
        if self.sample_cond is not None:
            cond = {k: v.to(self.device) for k, v in self.sample_cond.items()}
            return self.model.generate(**cond, generator=gen).canvases
        return self.model.generate(self.num_samples, generator=gen)

    def save_images(self, tag: str | None = None) -> tuple[Path, Path]:
        """Write ``samples_<step>.png`` (strip) and ``samples_<step>.gif`` under ``run_dir/images``."""
        canvases = self.sample_canvases().cpu()
        stem = self.run_dir / "images" / f"samples_{tag or f'{self.step:07d}'}"
        png = save_image(canvas_sheet(canvases * 2 - 1), stem.with_suffix(".png"))  # canvases are in [0, 1]
        gif = save_canvas_gif(canvases * 2 - 1, stem.with_suffix(".gif"), scale=1, ms_per_frame=120, hold=1)
        if self.writer is not None:
            self.writer.add_images("samples/final", canvases[:, -1], self.step)
        return png, gif

    def save(self, path: str | Path | None = None) -> Path:
        """Atomically write a ``draw`` checkpoint with everything needed to resume."""
        payload = {"model_spec": self.model_spec, "config": self.config, "vocab": self.vocab,
                   "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                   "step": self.step, "rng": rng_state(), "history": self.history}
        return save_checkpoint(path or self.checkpoint_path, CHECKPOINT_KIND, payload)

    def export(self, out_dir: str | Path | None = None, words_num: int = 18) -> Path:
        """Write a caption-conditioned model (alignDRAW) for ``tools/generate.py``: weights, vocabulary, spec."""
        if self.vocab is None:
            raise ValueError("only caption-conditioned DRAW models (alignDRAW) are exported for generation")
        return write_export(Path(out_dir) if out_dir else self.run_dir / "export", "aligndraw",
                            {"generator": self.model}, self.vocab, {"name": "aligndraw", "words_num": words_num},
                            self.step, self.config)

    def load(self, path: str | Path) -> None:
        """Resume from a ``draw`` checkpoint (strict weight loading)."""
        data = load_checkpoint(path, CHECKPOINT_KIND, map_location=self.device)
        load_state_dict_strict(self.model, data["model"], "DRAW model", path)
        self.optimizer.load_state_dict(data["optimizer"])
        self.step = int(data["step"])
        self.history = list(data.get("history") or [])
        if data.get("rng") is not None:
            set_rng_state(data["rng"])
        log.info("resumed DRAW training from %s at step %d", path, self.step)

    def _log(self, name: str, values: dict[str, float]) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{name}/{key}", value, self.step)

    def train(self) -> dict[str, float]:
        """Run until ``max_steps``; returns the final held-out metrics (or the last training losses)."""
        from tqdm import tqdm
        batches = _cycle(self.train_loader)
        bar = tqdm(total=self.max_steps, initial=self.step, disable=not self.progress, desc="draw", leave=False)
        start, running, last = time.time(), [], {}
        while self.step < self.max_steps:
            last = self.train_step(next(batches))
            running.append(last)
            bar.update(1)
            if self.log_every and self.step % self.log_every == 0:
                mean = {k: sum(s[k] for s in running) / len(running) for k in running[0]}
                running = []
                self._log("train", mean)
                bar.set_postfix(loss=f"{mean['loss']:.2f}")
                log.info("step %d: train -ELBO %.2f (recon %.2f, KL %.2f) nats", self.step, mean["loss"],
                         mean["recon"], mean["kl"])
            if self.eval_every and self.step % self.eval_every == 0 and self.test_loader is not None:
                self._record_eval(start)
            if self.image_every and self.step % self.image_every == 0:
                self.save_images()
            if self.ckpt_every and self.step % self.ckpt_every == 0:
                self.save()
        bar.close()
        final = self._record_eval(start) if self.test_loader is not None else last
        self.save()
        self.save_images("final")
        if self.writer is not None:
            self.writer.flush()
        return final

    def _record_eval(self, start: float) -> dict[str, float]:
        metrics = self.evaluate()
        metrics.update(step=self.step, minutes=(time.time() - start) / 60)
        self.history.append(metrics)
        self._log("test", {k: metrics[k] for k in ("nll_bound", "recon", "kl")})
        log.info("step %d: held-out NLL bound %.2f nats (recon %.2f, KL %.2f)", self.step, metrics["nll_bound"],
                 metrics["recon"], metrics["kl"])
        return metrics

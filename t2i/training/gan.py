"""One trainer for every GAN of the package (StackGAN, StackGAN++, AttnGAN, AttnGAN+DRAW).

The loss objects own the maths (t2i/losses/); this module owns the optimisation: the numbered steps of a
training step, mixed precision, EMA of the generator, checkpoints, resume, logging and export.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from t2i.errors import CheckpointError, DataError, TrainingError
from t2i.export import write_export
from t2i.io import load_checkpoint, load_state_dict_strict, save_checkpoint, start_over
from t2i.losses.gan import mode_seeking_loss
from t2i.models.layers import shared_weight_casts, use_transposed_upsampling
from t2i.runtime import DistInfo, Precision, rng_state, set_rng_state
from t2i.structures import Batch, TextEmbedding
from t2i.training.distributed import average_gradients, broadcast_parameters, rank_slice
from t2i.training.ema import EMA
from t2i.training.kernels import GEMM_CONV_CHOICES, choose_gemm_convs, conv_calls, use_gemm_convs
from t2i.training.logging import RunLogger

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "gan"


@dataclass
class Phase:
    """A span of training steps in which only ``stages`` are trained (StackGAN v1: Stage-I, then Stage-II)."""

    steps: int
    stages: list[int]


@dataclass
class GANTrainerSettings:
    max_steps: int = 2000
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    ema_beta: float = 0.999
    z_dim: int = 100
    log_every: int = 20
    image_every: int = 200
    ckpt_every: int = 200
    resume: str = "auto"
    phases: list[Phase] | None = None
    grad_clip: float | None = None
    channels_last: bool = False
    compile: bool = False
    lr_decay_steps: int | None = None  # StackGAN v1: halve both learning rates every this many steps of a phase
    fast_damsm: bool = True  # the frozen DAMSM image encoder with its BatchNorms folded, channels-last (same function)
    adam: str = "fused"  # Adam's implementation: loop (per tensor) | foreach (multi-tensor) | fused (one kernel, fastest)
    gemm_conv: str | bool = "auto"  # D's convolutions with outputs of at most 8x8 as one GEMM: auto (measured) | true | false
    # G's upsampling blocks (nearest x2 + conv3x3) as one transposed convolution: auto (on the CPU) | true | false
    transposed_upsample: str | bool = "auto"


ADAM_IMPLEMENTATIONS = ("loop", "foreach", "fused")


def make_adam(params, lr: float, betas: tuple[float, float], implementation: str = "fused") -> torch.optim.Adam:
    """``torch.optim.Adam`` with the chosen implementation; all three compute the same update (up to rounding)."""
    if implementation not in ADAM_IMPLEMENTATIONS:
        raise ValueError(f"unknown Adam implementation {implementation!r}; choose one of {', '.join(ADAM_IMPLEMENTATIONS)}")
    flags = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[implementation]
    return torch.optim.Adam(params, lr=lr, betas=betas, **flags)


class GANTrainer:
    """Train a multi-stage generator against per-stage discriminators.

    Args:
        generator: ``forward(z, text: TextEmbedding) -> GeneratorOutput``.
        discriminators: one per generator stage, lowest resolution first.
        text_encoder: frozen DAMSM text encoder with ``encode(batch) -> TextEmbedding`` and
            ``encode_captions(captions, lengths) -> TextEmbedding`` for the mismatched captions.
        loss: :class:`t2i.losses.gan.GANLoss` (conditions, per-stage D loss, G loss), each returning
            ``(loss, logs)``.
        loader: yields :class:`t2i.structures.Batch`.
        run_dir: checkpoints, TensorBoard logs and the export go here (rank 0 only).
        model_spec: plain specs of generator/discriminators/text encoder, stored with checkpoints and
            exports so that they rebuild themselves.
        vocab: the vocabulary as a plain dict, stored with checkpoints and exports.
        visualize: optional callback ``(trainer, step) -> None`` writing image grids/attention maps.
        image_levels: for each stage, the index into ``batch.images`` of its real images (default: same index).
    """

    def __init__(self, generator: nn.Module, discriminators: nn.ModuleList, text_encoder: nn.Module,
                 loss: nn.Module, loader, run_dir: str | Path, settings: GANTrainerSettings,
                 precision: Precision, device: torch.device, model_spec: dict, vocab: dict,
                 config: dict | None = None, dist: DistInfo | None = None,
                 visualize: Callable[["GANTrainer", int], None] | None = None,
                 image_levels: list[int] | None = None):
        self.device = device
        self.settings = s = settings
        self.dist = dist or DistInfo()
        self.generator = generator.to(device)
        self.discriminators = discriminators.to(device)
        self.text_encoder = text_encoder.to(device).eval().requires_grad_(False)
        self.loss = loss.to(device)
        self.loader = loader
        self.run_dir = Path(run_dir)
        self.precision = precision
        self.model_spec = model_spec
        self.vocab = vocab
        self.config = config or {}
        self.visualize = visualize
        # Which entry of ``batch.images`` each stage is trained against (StackGAN v1: 64 and 256 px).
        self.image_levels = image_levels or list(range(len(discriminators)))
        if isinstance(s.gemm_conv, bool):  # YAML reads true/false as booleans
            s.gemm_conv = str(s.gemm_conv).lower()
        if str(s.gemm_conv) not in GEMM_CONV_CHOICES:
            raise ValueError(f"gemm_conv={s.gemm_conv!r}; choose one of {', '.join(GEMM_CONV_CHOICES)}")
        self.gemm_convs: dict[str, str] | None = None  # chosen at the first step, at its shapes
        if s.fast_damsm and hasattr(self.loss, "fast_image_encoder"):
            self.loss.fast_image_encoder()
        self.transposed_upsampling = self._use_transposed_upsampling(str(s.transposed_upsample).lower())
        if s.channels_last:  # NHWC lets oneDNN / cuDNN pick their fast (bf16, AMX, tensor-core) kernels
            for module in (self.generator, self.discriminators, self.loss):
                module.to(memory_format=torch.channels_last)
        # torch.compile wraps the generator's forward only; state dicts and EMA see the plain module.
        self.generator_forward = torch.compile(self.generator) if s.compile else self.generator
        broadcast_parameters(self.generator)
        broadcast_parameters(self.discriminators)
        self.ema = EMA(self.generator, s.ema_beta)
        self.opt_g = make_adam(self.generator.parameters(), s.lr_g, s.betas, s.adam)
        self.opt_d = [make_adam(d.parameters(), s.lr_d, s.betas, s.adam) for d in self.discriminators]
        self.scaler = precision.grad_scaler()
        self.step = 0
        self.images_seen = 0  # by all ranks together since this process started (the logged images_per_s)
        self.logger = RunLogger(self.run_dir, enabled=self.dist.is_main)
        self.fixed_noise: torch.Tensor | None = None
        self.fixed_batch: Batch | None = None

    # ------------------------------------------------------------------ schedule
    def active_stages(self, step: int) -> list[int]:
        """Stages trained at ``step`` (all of them unless phases are set)."""
        n = len(self.discriminators)
        if not self.settings.phases:
            return list(range(n))
        done = 0
        for phase in self.settings.phases:
            done += phase.steps
            if step < done:
                return list(phase.stages)
        return list(self.settings.phases[-1].stages)

    def learning_rates(self, step: int) -> tuple[float, float]:
        """``(lr_g, lr_d)`` at ``step``: constant, or halved every ``lr_decay_steps`` steps of the current phase.

        StackGAN v1 halves both rates every ``LR_DECAY_EPOCH`` epochs and trains Stage-II as a new run, so the
        count restarts at the start of each phase.
        """
        s = self.settings
        if not s.lr_decay_steps:
            return s.lr_g, s.lr_d
        start = end = 0  # first step of the phase ``step`` is in (the last phase runs on after its end)
        for phase in s.phases or []:
            if step < end:
                break
            start, end = end, end + phase.steps
        factor = 0.5 ** ((step - start) // s.lr_decay_steps)
        return s.lr_g * factor, s.lr_d * factor

    def _set_learning_rates(self, step: int) -> None:
        lr_g, lr_d = self.learning_rates(step)
        for group in self.opt_g.param_groups:
            group["lr"] = lr_g
        for opt in self.opt_d:
            for group in opt.param_groups:
                group["lr"] = lr_d

    def _freeze_inactive(self, stages: list[int]) -> None:
        """StackGAN v1: once a phase trains later stages only, the earlier ones are frozen for good."""
        for i in range(min(stages)):
            if i not in self.generator.frozen:
                self.generator.freeze_stage(i)

    # ------------------------------------------------------------------ one step
    def encode(self, batch: Batch) -> tuple[TextEmbedding, TextEmbedding | None]:
        with torch.no_grad():
            text = self.text_encoder.encode(batch)
            wrong = None
            if batch.wrong_captions is not None:
                wrong = self.text_encoder.encode_captions(batch.wrong_caption_batch())
        return text, wrong

    def train_step(self, batch: Batch) -> dict[str, float]:
        batch = batch.to(self.device)
        if self.settings.channels_last:
            batch.images = [x.contiguous(memory_format=torch.channels_last) for x in batch.images]
        if self.gemm_convs is None:
            self.choose_conv_kernels(batch)
        stages = self.active_stages(self.step)
        self._freeze_inactive(stages)
        self._set_learning_rates(self.step)
        logs: dict[str, float] = {}
        # (1) encode text with the frozen DAMSM text encoder
        text, wrong = self.encode(batch)
        # (2) generate
        # Noise for the whole global batch, identical on every rank; each rank takes its rows.
        world = self.dist.world_size
        z = torch.randn(len(batch) * world, self.settings.z_dim, device=self.device)
        z = z[rank_slice(len(z), self.dist.rank, world)]
        with self.precision.autocast():
            output = self.generator_forward(z, text)
        cond, wrong_cond = self.loss.conditions(output, text, wrong, self.generator)
        # (3) update each active stage's discriminator
        for i in stages:
            d, opt = self.discriminators[i], self.opt_d[i]
            with self.precision.autocast(), shared_weight_casts(d):  # one cast of D's GEMM weights
                loss_d, d_logs = self.loss.discriminator(d, batch.images[self.image_levels[i]], output.images[i], cond,
                                                         wrong_cond, batch.class_ids)
            self._check_finite(loss_d, f"loss_d stage {i + 1}")
            opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss_d).backward()
            self._clip_and_step(opt, d.parameters())
            logs.update({f"d{i + 1}/{k}": v for k, v in d_logs.items()})
        # (4) update the generator: adversarial + lambda x DAMSM + KL
        for d in self.discriminators:
            d.requires_grad_(False)
        with self.precision.autocast():
            loss_g, g_logs = self.loss.generator(output, self.discriminators, cond, text, batch, stages)
            if self.loss.mode_seeking_weight > 0:  # MSGAN: the same texts with a second noise
                z2 = torch.randn_like(z)
                last = max(stages)
                ms = mode_seeking_loss(output.images[last], self.generator_forward(z2, text).images[last], z, z2)
                g_logs["mode_seeking"] = ms.item()
                loss_g = loss_g + self.loss.mode_seeking_weight * ms
                g_logs["total"] = loss_g.item()
        for d in self.discriminators:
            d.requires_grad_(True)
        self._check_finite(loss_g, "loss_g")
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(loss_g).backward()
        self._clip_and_step(self.opt_g, self.generator.parameters())
        self.scaler.update()
        logs.update({f"g/{k}": v for k, v in g_logs.items()})
        # (5) average the generator
        self.ema.update()
        self.step += 1
        return logs

    def choose_conv_kernels(self, batch: Batch) -> dict[str, str]:
        """``train.gemm_conv``: run the discriminators' small convolutions (outputs of at most 8x8) as one GEMM
        where that is faster here (:mod:`t2i.training.kernels`). ``auto`` measures each layer at this batch's
        shapes on a CPU in fp32 or bf16, and keeps oneDNN's / cuDNN's kernels elsewhere. Same function, same
        parameters.
        """
        mode, start = str(self.settings.gemm_conv), time.perf_counter()
        if mode == "auto" and (self.device.type != "cpu" or self.precision.name not in ("fp32", "bf16")
                               or self.settings.channels_last):
            mode = "false"  # measured on the CPU in fp32 or bf16, NCHW only
        chosen: dict[str, str] = {}
        for i, d in enumerate(self.discriminators):
            if mode == "false":
                break
            images = batch.images[self.image_levels[i]]

            def run(d=d, images=images):
                code = d.encode(images)
                if hasattr(d, "cond_logits"):
                    d.cond_logits(code, images.new_zeros(len(images), d.cond_dim))
                    if d.has_uncond:
                        d.uncond_logits(code)

            picked = choose_gemm_convs(conv_calls(d, run, self.precision.name), mode)
            use_gemm_convs(d, picked)
            chosen.update({f"discriminators.{i}.{name}": why for name, why in picked.items()})
        self.gemm_convs = chosen
        if mode != "false":
            log.info("gemm_conv=%s: %d discriminator convolution(s) as one GEMM (chosen in %.1f s)%s",
                     self.settings.gemm_conv, len(chosen), time.perf_counter() - start,
                     "".join(f"; {k}: {v}" for k, v in chosen.items()))
        return chosen

    def _use_transposed_upsampling(self, mode: str) -> int:
        """``train.transposed_upsample``: the generator's nearest x2 + conv3x3 blocks as one transposed convolution
        (:func:`t2i.models.layers.upsample_conv3x3`; same parameters and function). ``auto`` turns it on on the CPU,
        where it was measured (1.15-4.2x faster forward + backward per block); CUDA keeps the two-step form."""
        if mode not in GEMM_CONV_CHOICES:  # the same auto / true / false switch
            raise ValueError(f"transposed_upsample={mode!r}; choose one of {', '.join(GEMM_CONV_CHOICES)}")
        enabled = mode == "true" or (mode == "auto" and self.device.type == "cpu")
        count = use_transposed_upsampling(self.generator, enabled)
        if enabled:
            log.info("transposed_upsample=%s: %d upsampling block(s) of G as one transposed convolution", mode, count)
        return count if enabled else 0

    def _clip_and_step(self, opt: torch.optim.Optimizer, params) -> None:
        params = list(params)
        average_gradients(params, self.dist.world_size)
        if self.settings.grad_clip:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, self.settings.grad_clip)
        self.scaler.step(opt)

    def _check_finite(self, loss: torch.Tensor, what: str) -> None:
        if not torch.isfinite(loss.detach()).all():
            last = self.run_dir / "checkpoint.pt"
            kept = (f"the last good checkpoint {last} is kept (checkpoints are saved only when every weight is "
                    "finite)") if last.exists() else "no checkpoint was written yet"
            raise TrainingError(f"{what} became {loss.item()} at step {self.step}; {kept}; "
                                "lower the learning rate or use train.precision=fp32, then resume")

    # ------------------------------------------------------------------ loop
    def fit(self) -> Path | None:
        if self.settings.resume == "auto":
            self.try_resume()
        elif self.dist.is_main:
            start_over(self.run_dir / "checkpoint.pt")
        total = self.settings.max_steps
        bar = tqdm(total=total, initial=self.step, desc="train", unit="it", disable=not self.dist.is_main,
                   dynamic_ncols=True)
        seen0, t0 = self.images_seen, time.perf_counter()
        epoch = 0
        while self.step < total:
            sampler = getattr(self.loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            batches = 0
            for batch in self.loader:
                batches += 1
                if self.fixed_batch is None:
                    self.fixed_batch = batch
                    self.fixed_noise = torch.randn(len(batch), self.settings.z_dim,
                                                   generator=torch.Generator().manual_seed(0))
                logs = self.train_step(batch)
                self.images_seen += len(batch) * self.dist.world_size  # the global batch
                bar.update(1)
                if self.step % self.settings.log_every == 0 or self.step == total:
                    rate = (self.images_seen - seen0) / max(time.perf_counter() - t0, 1e-9)
                    logs["images_per_s"] = rate
                    self.logger.scalars(logs, self.step)
                    bar.set_postfix({k.split("/")[-1] if k.startswith("g/") else k: f"{v:.3g}"
                                     for k, v in logs.items() if k in ("g/total", "d1/total", "images_per_s")})
                if self.visualize is not None and self.dist.is_main and (
                        self.step % self.settings.image_every == 0 or self.step == total):
                    self.visualize(self, self.step)
                if self.step % self.settings.ckpt_every == 0 or self.step == total:
                    self.save()
                if self.step >= total:
                    break
            if batches == 0:  # an empty epoch would repeat forever
                raise DataError("the training data yields no batch; check the data set and train.batch_size")
            epoch += 1
        bar.close()
        self.logger.close()
        return self.export() if self.dist.is_main else None

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        return {
            "step": self.step,
            "generator": _unwrap(self.generator).state_dict(),
            "ema": self.ema.state_dict(),
            "discriminators": _unwrap(self.discriminators).state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": [o.state_dict() for o in self.opt_d],
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "model_spec": self.model_spec,
            "config": self.config,
            "vocab": self.vocab,
        }

    def save(self, path: str | Path | None = None) -> Path | None:
        if not self.dist.is_main:
            return None
        path = Path(path) if path else self.run_dir / "checkpoint.pt"
        return save_checkpoint(path, CHECKPOINT_KIND, self.state())

    def load(self, path: str | Path) -> None:
        data = load_checkpoint(path, CHECKPOINT_KIND)
        if data.get("model_spec", {}).get("name") != self.model_spec.get("name"):
            raise CheckpointError(f"{path} is a checkpoint of model {data.get('model_spec', {}).get('name')!r}, "
                                  f"not {self.model_spec.get('name')!r}; use another run_dir or train.resume=never")
        load_state_dict_strict(_unwrap(self.generator), data["generator"], "generator", path)
        load_state_dict_strict(self.ema.shadow, data["ema"], "averaged generator", path)
        load_state_dict_strict(_unwrap(self.discriminators), data["discriminators"], "discriminators", path)
        self.opt_g.load_state_dict(data["opt_g"])
        for opt, state in zip(self.opt_d, data["opt_d"]):
            opt.load_state_dict(state)
        self.scaler.load_state_dict(data["scaler"])
        set_rng_state(data["rng"])
        self.step = int(data["step"])

    def try_resume(self) -> bool:
        path = self.run_dir / "checkpoint.pt"
        if not path.exists():
            return False
        self.load(path)
        log.info("resumed from %s at step %d", path, self.step)
        return True

    def export(self, out_dir: str | Path | None = None) -> Path:
        """Write the averaged generator, text encoder, vocabulary and specs: enough for generation."""
        out = write_export(Path(out_dir) if out_dir else self.run_dir / "export", "gan",
                           {"generator": self.ema.shadow, "text_encoder": self.text_encoder}, self.vocab,
                           self.model_spec, self.step, self.config)
        log.info("exported the averaged generator to %s", out)
        return out


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if hasattr(module, "module") and isinstance(module, nn.parallel.DistributedDataParallel) else module


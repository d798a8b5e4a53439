"""Assemble and train a GAN (StackGAN, StackGAN++, AttnGAN, AttnGAN+DRAW) from a composed config.

The recipe reads the config (attribute access only; no Hydra import), loads the pretrained DAMSM,
builds data, generator, discriminators and losses with the values that depend on them (vocabulary size,
embedding sizes) passed at the call site, then hands everything to :class:`t2i.training.gan.GANTrainer`.
"""

from __future__ import annotations

import logging
import math
from typing import Any
from pathlib import Path

import torch

from t2i.config import option, run_option, to_container
from t2i.data.dataset import make_loader
from t2i.errors import CheckpointError, ConfigError
from t2i.losses.gan import GANLoss
from t2i.models.damsm import IMAGE_NAME, TEXT_NAME, find_encoder, load_image_encoder, load_text_encoder
from t2i.models.factory import build_from_spec, module_spec, spec_from_node
from t2i.recipes.data import build_datasets
from t2i.runtime import Precision, ProbeShape, init_distributed, resolve_device, seed_everything
from t2i.training.gan import GANTrainer, GANTrainerSettings, Phase
from t2i.visualize import attention_figure, canvas_strip, grid_image, save_image

log = logging.getLogger(__name__)


def damsm_paths(cfg) -> tuple[Path, Path]:
    """The pretrained DAMSM's text and image encoder files, with a clear error when missing."""
    ckpt = option(cfg.encoder, "checkpoint", f"runs/{cfg.data.name}/damsm")
    folder = Path(str(ckpt))
    if not folder.is_dir():
        raise CheckpointError(
            f"no pretrained DAMSM at {folder}; train it first with "
            f"'python tools/train.py model=damsm data={cfg.data.name}' or pass encoder.checkpoint=DIR")
    return find_encoder(folder, TEXT_NAME), find_encoder(folder, IMAGE_NAME)


def stage_levels(resolutions: list[int]) -> list[int]:
    """Index of each stage's resolution in the doubling pyramid that starts at the first stage's size."""
    base = resolutions[0]
    levels = []
    for r in resolutions:
        level = math.log2(r / base)
        if level != int(level):
            raise ConfigError(f"stage resolutions {resolutions} are not the first size times powers of two")
        levels.append(int(level))
    return levels


def build_models(cfg, text_encoder: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.ModuleList, dict]:
    """Generator and one discriminator per stage for ``cfg.model``, with the text encoder's sizes filled in."""
    model = cfg.model
    dim = int(text_encoder.out_dim)
    gen_spec = spec_from_node(to_container(model.generator), sent_dim=dim, word_dim=dim)
    generator = build_from_spec(gen_spec)
    condition = str(option(model, "d_condition", "sentence"))
    cond_dim = dim if condition == "sentence" else int(gen_spec["kwargs"]["c_dim"])
    d_node = to_container(model.discriminator)
    per_stage = to_container(option(model, "discriminator_per_stage")) or [{}] * len(generator.resolutions)
    if len(per_stage) != len(generator.resolutions):
        raise ConfigError(f"discriminator_per_stage has {len(per_stage)} entries for {len(generator.resolutions)} "
                          f"generator stages {list(model.generator.stages)}")
    d_specs = [spec_from_node({**d_node, **extra}, resolution=int(r), cond_dim=cond_dim)
               for r, extra in zip(generator.resolutions, per_stage)]
    discriminators = torch.nn.ModuleList(build_from_spec(s) for s in d_specs)
    spec = {
        "name": str(model.name),
        "z_dim": int(gen_spec["kwargs"]["z_dim"]),
        "words_num": int(cfg.data.words_num),
        "generator": module_spec(generator),
        "discriminators": [module_spec(d) for d in discriminators],
        "text_encoder": module_spec(text_encoder),
    }
    return generator, discriminators, spec


def make_visualizer(sample_dir: Path, vocab):
    """Callback writing per-stage grids and an attention figure of the fixed batch (EMA generator)."""

    def visualize(trainer: GANTrainer, step: int) -> None:
        batch = trainer.fixed_batch.to(trainer.device)
        n = min(16, len(batch))
        noise = trainer.fixed_noise.to(trainer.device)
        with torch.no_grad():
            text, _ = trainer.encode(batch)
            out = trainer.ema.shadow(noise, text, sample=False)
            # The averaged G lags the live one by ~1/(1 - beta) steps; early in a run only the live one shows progress.
            was_training = trainer.generator.training
            live = trainer.generator.eval()(noise, text, sample=False)
            trainer.generator.train(was_training)
        for s, images in enumerate(out.images):
            img = grid_image(images[:n].float(), nrow=8)
            trainer.logger.image(f"samples/stage{s + 1}", img, step)
            save_image(img, sample_dir / f"step{step:06d}_stage{s + 1}.png")
        live_img = grid_image(live.images[-1][:n].float(), nrow=8)
        trainer.logger.image("samples/live_generator", live_img, step)
        save_image(live_img, sample_dir / f"step{step:06d}_live.png")
        if out.attn_maps:
            words = vocab.decode(batch.captions[0].tolist())
            fig = attention_figure([im[0] for im in out.images[1:]], [a[0].float() for a in out.attn_maps], words,
                                   labels=[f"stage {s + 2}" for s in range(len(out.attn_maps))])
            trainer.logger.image("attention", fig, step)
            save_image(fig, sample_dir / f"step{step:06d}_attention.png")
        if out.canvases is not None:
            strip = canvas_strip(out.canvases[0].float())
            trainer.logger.image("canvas", strip, step)
            save_image(strip, sample_dir / f"step{step:06d}_canvas.png")

    return visualize


def build_loss(model, image_encoder: torch.nn.Module | None) -> GANLoss:
    """The GAN objective of ``cfg.model``; ``released_eq10`` and ``mismatched=next_in_batch`` follow the released code."""
    return GANLoss(image_encoder=image_encoder, lambda_damsm=float(option(model, "lambda_damsm", 0.0)),
                   kl_weight=float(model.kl_weight), adversarial=str(model.loss), scheme=str(model.d_scheme),
                   condition=str(model.d_condition), uncond_weight=float(model.uncond_weight),
                   released_eq10=bool(option(model, "released_eq10", False)),
                   mismatched=str(option(model, "mismatched", "other_class")),
                   ma_gp_weight=float(option(model, "ma_gp_weight", 0.0)),
                   ma_gp_power=float(option(model, "ma_gp_power", 6.0)), augment=_policy(option(model, "augment")),
                   mode_seeking_weight=float(option(model, "mode_seeking_weight", 0.0)))


def build_trainer(cfg) -> GANTrainer:
    dist = init_distributed()
    # Each rank its own random stream (CA noise, data order offsets); parameters start equal by broadcast.
    seed_everything(int(cfg.seed) + dist.rank)
    device = resolve_device(str(cfg.device)) if not dist.enabled or not torch.cuda.is_available() \
        else torch.device("cuda", dist.local_rank)

    # (1) the pretrained DAMSM: frozen text encoder, and the image encoder for the DAMSM loss
    text_path, image_path = damsm_paths(cfg)
    text_encoder = load_text_encoder(text_path)
    model = cfg.model
    lambda_damsm = float(option(model, "lambda_damsm", 0.0))
    image_encoder = load_image_encoder(image_path, embed_dim=int(text_encoder.out_dim)) if lambda_damsm > 0 else None

    # (2) models
    generator, discriminators, spec = build_models(cfg, text_encoder)
    levels = stage_levels(list(generator.resolutions))

    # (3) data, tokenised with the vocabulary the DAMSM was trained with (checked)
    train_ds, _, vocab = build_datasets(cfg.data, base_size=generator.resolutions[0], num_stages=levels[-1] + 1,
                                        seed=int(cfg.seed))
    load_text_encoder(text_path, vocab=vocab)  # raises CheckpointError when the vocabularies differ
    batch_size = int(run_option(cfg, "batch_size"))
    sampler = None
    if dist.enabled:
        from torch.utils.data.distributed import DistributedSampler
        sampler = DistributedSampler(train_ds, num_replicas=dist.world_size, rank=dist.rank, seed=int(cfg.seed),
                                     drop_last=True)
        batch_size //= dist.world_size
    loader = make_loader(train_ds, batch_size=batch_size, shuffle=True, drop_last=True, sampler=sampler,
                         num_workers=int(option(cfg.train, "num_workers", 0)), seed=int(cfg.seed))
    # precision=auto probes a block at the first stage's width and resolution and this batch size
    probe = ProbeShape(channels=int(option(model.generator, "ngf", 32)) * 2, size=int(generator.resolutions[0]),
                       batch=min(batch_size, 8))
    precision = Precision(str(cfg.train.precision), device, probe_shape=probe)

    # (4) losses
    loss = build_loss(model, image_encoder)

    phases = option(model, "phases")
    decay_epochs = option(model, "lr_decay_epochs")  # StackGAN v1: epochs between halvings -> steps of this loader
    settings = GANTrainerSettings(
        max_steps=int(run_option(cfg, "max_steps")),
        lr_g=float(model.lr_g), lr_d=float(model.lr_d), betas=tuple(model.betas),
        ema_beta=float(option(model, "ema_beta", 0.999)), z_dim=spec["z_dim"],
        log_every=int(cfg.train.log_every), image_every=int(cfg.train.image_every),
        ckpt_every=int(cfg.train.ckpt_every), resume=str(cfg.train.resume),
        phases=[Phase(int(p.steps), list(p.stages)) for p in phases] if phases else None,
        channels_last=bool(option(cfg.train, "channels_last", False)), compile=bool(option(cfg.train, "compile", False)),
        fast_damsm=bool(option(cfg.train, "fast_damsm", True)), adam=str(option(cfg.train, "adam", "fused")),
        gemm_conv=option(cfg.train, "gemm_conv", "auto"),
        transposed_upsample=option(cfg.train, "transposed_upsample", "auto"),
        lr_decay_steps=int(decay_epochs) * max(len(loader), 1) if decay_epochs else None,
    )
    run_dir = Path(str(cfg.run_dir))
    if dist.enabled and torch.cuda.is_available():
        generator = generator.to(device)
    trainer = GANTrainer(generator, discriminators, text_encoder, loss, loader, run_dir, settings, precision, device,
                         model_spec=spec, vocab=vocab.to_dict(), config=to_container(cfg), dist=dist,
                         visualize=make_visualizer(run_dir / "samples", vocab), image_levels=levels)
    return trainer


def train(cfg) -> Path | None:
    trainer = build_trainer(cfg)
    log.info("training %s: generator %.2fM params, discriminators %.2fM, stages %s at %s px",
             cfg.model.name, _count(trainer.generator) / 1e6, _count(trainer.discriminators) / 1e6,
             trainer.generator.stage_kinds, trainer.generator.resolutions)
    export = trainer.fit()
    if export is not None:
        log.info("trained %s for %d steps; exported to %s", cfg.model.name, trainer.step, export)
        log.info("generate with: python tools/generate.py checkpoint=%s caption=\"a bird with a green crown\"", export)
    return export


def _policy(value: Any) -> str | None:
    """``model.augment``: a DiffAugment policy as ``translation,cutout`` or a list of names."""
    return value if value is None or isinstance(value, str) else ",".join(str(v) for v in value)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

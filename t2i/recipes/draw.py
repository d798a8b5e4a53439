"""Recipe for the DRAW family: ``python tools/train.py model=draw data=mnist`` or ``model=aligndraw``.

``model=draw`` trains the unconditional DRAW VAE on binarised MNIST (``conf/data/mnist.yaml``);
``model=aligndraw`` trains alignDRAW on captioned images (the synthetic birds by default) at
``model.image_size`` pixels, one stage. The config arrives from ``tools/train.py``; it is read by
attribute access and built with :func:`t2i.config.build` (no Hydra import here).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from t2i.config import option, run_option, to_container
from t2i.errors import ConfigError
from t2i.models.factory import build_from_spec, spec_from_node
from t2i.runtime import resolve_device, seed_everything
from t2i.training.draw import DrawTrainer

log = logging.getLogger(__name__)

MODELS = ("draw", "aligndraw")


def _mnist_data(cfg: Any, batch_size: int, seed: int):
    if option(cfg.data, "dataset") is None or option(cfg.data, "name") != "mnist":
        raise ConfigError(f"model=draw needs data=mnist, got data={option(cfg.data, 'name')}")
    from t2i.config import build
    train_ds, test_ds = build(cfg.data.dataset)
    channels, height, width = train_ds.images.shape[1:]  # (N, C, H, W)
    train_loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(seed))
    test_loader = DataLoader(test_ds, batch_size=max(batch_size, 250), shuffle=False)
    runtime = dict(height=int(height), width=int(width), channels=int(channels))
    return train_loader, test_loader, runtime, None, None


def _caption_data(cfg: Any, batch_size: int, seed: int, num_samples: int):
    if option(cfg.data, "name") == "mnist":
        raise ConfigError("model=aligndraw needs captioned images (data=synthbirds, cub or coco), not data=mnist")
    from t2i.data.dataset import collate, make_loader
    from t2i.recipes.data import build_datasets
    size = int(option(cfg.model, "image_size", 32))
    train_ds, test_ds, vocab = build_datasets(cfg.data, base_size=size, num_stages=1, seed=seed)
    train_loader = make_loader(train_ds, batch_size, shuffle=True, drop_last=True, seed=seed,
                               num_workers=int(option(cfg.train, "num_workers", 0)))
    test_loader = make_loader(test_ds, batch_size, shuffle=False, seed=seed)
    samples = collate([test_ds[i] for i in range(min(num_samples, len(test_ds)))], wrong_captions=False)
    sample_cond = {"captions": samples.captions, "lengths": samples.lengths}
    log.info("alignDRAW sample captions: %s", samples.caption_texts[:4])
    runtime = dict(vocab_size=len(vocab), height=size, width=size, channels=3)
    return train_loader, test_loader, runtime, vocab.to_dict(), sample_cond


def train(cfg: Any) -> dict[str, float]:
    """Train ``model=draw`` or ``model=aligndraw`` from a composed config.

    Returns:
        The final held-out metrics (``nll_bound``, ``recon``, ``kl`` in nats per image).
    """
    name = option(cfg.model, "name")
    if name not in MODELS:
        raise ConfigError(f"the draw recipe trains {' or '.join(MODELS)}, not model={name}")
    seed = int(option(cfg, "seed", 0))
    seed_everything(seed)
    device = resolve_device(str(option(cfg, "device", "auto")))
    run = cfg.train
    batch_size = int(run_option(cfg, "batch_size"))
    max_steps = int(run_option(cfg, "max_steps"))
    num_samples = int(option(cfg.model, "num_samples", 16))
    if name == "draw":
        train_loader, test_loader, runtime, vocab, sample_cond = _mnist_data(cfg, batch_size, seed)
    else:
        train_loader, test_loader, runtime, vocab, sample_cond = _caption_data(cfg, batch_size, seed, num_samples)
    if str(option(run, "precision", "fp32")) not in ("fp32", "auto"):
        log.info("DRAW trains in fp32 (the ELBO is reported in nats; the LSTMs are small)")
    spec = spec_from_node(to_container(cfg.model.net), **runtime)
    model = build_from_spec(spec)
    log.info("%s: %.2fM parameters, %s", name, sum(p.numel() for p in model.parameters()) / 1e6, spec["kwargs"])
    trainer = DrawTrainer(
        model, train_loader, test_loader, run_dir=Path(str(cfg.run_dir)), model_spec=spec,
        config=to_container(cfg), vocab=vocab, lr=float(cfg.model.lr), betas=tuple(cfg.model.betas),
        grad_clip=option(cfg.model, "grad_clip"), likelihood=str(option(cfg.model, "likelihood", "bernoulli")),
        max_steps=max_steps, log_every=int(run.log_every),
        eval_every=int(option(cfg.model, "eval_every", 500)), image_every=int(run.image_every),
        ckpt_every=int(run.ckpt_every), sample_cond=sample_cond, num_samples=num_samples,
        device=device, resume=str(option(run, "resume", "auto")) == "auto", seed=seed)
    final = trainer.train()
    if name == "aligndraw":
        export = trainer.export(words_num=int(cfg.data.words_num))
        log.info("trained aligndraw for %d steps; exported to %s", trainer.step, export)
    log.info("%s finished at step %d: %s", name, trainer.step, final)
    return final

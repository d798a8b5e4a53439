"""Config-aware data wiring: data config -> source -> (train, test) datasets and vocabulary.

Takes the ``data`` node of a composed config (``conf/data/*.yaml``) by attribute access and builds
the library objects with :func:`t2i.config.build`; it never imports Hydra or OmegaConf itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from t2i.config import build, option, to_container
from t2i.data.dataset import TextImageDataset
from t2i.data.text import Vocabulary
from t2i.errors import ConfigError

__all__ = ["build_source", "build_datasets", "build_recolour", "recolour_probability"]

log = logging.getLogger(__name__)

_RUN_ONLY = ("workers", "progress")  # render_dataset arguments that do not change the rendered set


def build_source(data_cfg: Any) -> Any:
    """Instantiate ``data_cfg.source`` (a ``CUBSource``/``COCOSource``).

    A config with a ``render`` node (the synthetic birds) renders the data set into ``data_cfg.root``
    first, when it is not rendered there yet with these settings.

    Raises:
        DataError: the data root is missing or not in the expected layout (see data/README.md).
    """
    render = option(data_cfg, "render")
    if render is not None:
        from t2i.data import synthbirds

        root = Path(str(data_cfg.root))
        kwargs = dict(to_container(render))
        settings = {k: v for k, v in kwargs.items() if k not in _RUN_ONLY}
        if not synthbirds.is_rendered(root, **settings):
            log.info("rendering the synthetic birds into %s (%s); this happens once", root, settings)
            synthbirds.render_dataset(root, **kwargs)
    source = option(data_cfg, "source")
    if source is None:
        raise ConfigError(f"data config {option(data_cfg, 'name', '?')!r} has no 'source' node; "
                          "it is not a caption data set (choose data=synthbirds, cub, coco or coco_json)")
    return build(source)  # re-raises a reader's DataError as it is


def recolour_probability(data_cfg: Any) -> float:
    """``data.recolour``, checked: a probability, and 0 for data that t2i does not render.

    Raises:
        ConfigError: ``data.recolour`` outside [0, 1], or set for a data set that is not rendered by t2i.
    """
    value = option(data_cfg, "recolour", 0.0)
    try:
        probability = float(value)
    except (TypeError, ValueError):
        probability = float("nan")
    if not 0.0 <= probability <= 1.0:
        raise ConfigError(f"data.recolour={value} must be a probability in [0, 1] (0: off)")
    if probability > 0.0 and option(data_cfg, "render") is None:
        raise ConfigError(f"data.recolour={value}: palette swaps redraw synthetic birds, so they need data=synthbirds; "
                          f"{option(data_cfg, 'name', '?')!r} is stored images (use data.recolour=0)")
    return probability


def build_recolour(data_cfg: Any, render_size: int, vocab: Vocabulary | None = None) -> Any:
    """The palette swap of ``data.recolour`` (:class:`t2i.data.synthbirds.PaletteSwap`), or None when it is 0.
    With a ``vocab``, only the colours it knows are permuted (a swap never writes a word it would drop).

    Raises:
        ConfigError: as :func:`recolour_probability`.
        DataError: the render under ``data.root`` is missing or was drawn by another version of t2i.
    """
    probability = recolour_probability(data_cfg)
    if probability == 0.0:
        return None
    from t2i.data.synthbirds import COLOURS, PaletteSwap

    colours = None if vocab is None else [c for c in COLOURS if c in vocab]
    swap = PaletteSwap(str(data_cfg.root), probability, render_size=render_size, colours=colours)
    log.info("palette swaps: %s", swap)
    return swap


def build_datasets(data_cfg: Any, *, base_size: int, num_stages: int, words_num: int | None = None,
                   skip_bad: bool | None = None, train_wrong_captions: bool = True,
                   seed: int = 0) -> tuple[TextImageDataset, TextImageDataset, Vocabulary]:
    """The train and test datasets of a data config, and their shared vocabulary.

    Args:
        data_cfg: the ``data`` config node.
        base_size: first-stage image size (model dependent, so passed by the caller).
        num_stages: number of image resolutions.
        words_num: maximum caption length; default ``data_cfg.words_num``.
        skip_bad: skip unreadable images; default ``data_cfg.skip_bad``.
        train_wrong_captions: sample mismatched captions for the training set.
        seed: seed of the deterministic choices of the test set.
    """
    recolour_probability(data_cfg)  # a bad value fails before a render starts
    source = build_source(data_cfg)
    vocab = source.vocabulary()
    words_num = int(words_num if words_num is not None else option(data_cfg, "words_num", 18))
    skip_bad = bool(skip_bad if skip_bad is not None else option(data_cfg, "skip_bad", False))
    common = dict(vocab=vocab, base_size=base_size, num_stages=num_stages, words_num=words_num,
                  skip_bad=skip_bad, unknown=str(option(data_cfg, "unknown", "drop")))
    recolour = build_recolour(data_cfg, 2 * base_size * 2 ** (num_stages - 1), vocab)
    train_ds = TextImageDataset(source.records("train"), train=True, wrong_captions=train_wrong_captions,
                                recolour=recolour, **common)
    test_ds = TextImageDataset(source.records("test"), train=False, seed=seed, **common)
    log.info("data %s: %d train / %d test images, vocabulary of %d tokens",
             option(data_cfg, "name", "?"), len(train_ds), len(test_ds), len(vocab))
    return train_ds, test_ds, vocab

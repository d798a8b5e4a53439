"""Released-checkpoint stand-ins for the converter tests, built from the reference key manifests.

``../shared/reference_keys/*.json`` (one per reference network, from the reference code) list every key, shape and
dtype of the released networks. :func:`write_reference` writes a state dict with exactly those keys and shapes and
random values, optionally as PyTorch 0.3/0.4 did (no ``num_batches_tracked``, legacy serialisation) or with
DataParallel's ``module.`` prefix. The manifests are copied into ``tests/fixtures/reference_keys/``.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

REFERENCE_KEYS = Path(__file__).resolve().parent / "fixtures" / "reference_keys"

WORDS = ["<end>", "this", "bird", "has", "a", "red", "crown", "and", "blue", "wings", "small", "yellow", "belly",
         "green", "black", "white", "beak", "long", "tail", "the"]


def manifest(name: str) -> dict:
    return json.loads((REFERENCE_KEYS / f"{name}.json").read_text())


def manifest_names() -> list[str]:
    return sorted(p.stem for p in REFERENCE_KEYS.glob("*.json"))


def reference_state(name: str, seed: int = 0, vocab_size: int | None = None, old: bool = False,
                    prefix: str = "") -> dict[str, torch.Tensor]:
    """Random tensors with the manifest's keys, shapes and dtypes (``encoder.weight`` resized to ``vocab_size``)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape, dtype in manifest(name)["state_dict"]:
        if old and key.endswith("num_batches_tracked"):
            continue
        if key == "encoder.weight" and vocab_size is not None:
            shape = [vocab_size, shape[1]]
        if dtype == "int64":
            state[prefix + key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("running_var"):
            state[prefix + key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[prefix + key] = torch.randn(shape, generator=g) * 0.05
    return state


def write_reference(path: Path, name: str, **kwargs) -> Path:
    """Save :func:`reference_state` as a released file; ``old=True`` also uses the legacy (pre-1.6) serialisation."""
    state = reference_state(name, **kwargs)
    torch.save(state, path, _use_new_zipfile_serialization=not kwargs.get("old", False))
    return path


def write_captions_pickle(path: Path, words: list[str] = WORDS) -> Path:
    """AttnGAN's ``captions.pickle``: ``[train_captions, test_captions, ixtoword, wordtoix]``."""
    ixtoword = dict(enumerate(words))
    wordtoix = {w: i for i, w in ixtoword.items()}
    train = [[1, 2, 3, 4, 5, 6], [4, 10, 2, 7, 8, 9]]
    test = [[1, 2, 3, 11, 12]]
    with open(path, "wb") as f:
        pickle.dump([train, test, ixtoword, wordtoix], f, protocol=2)
    return path


def tiny_reference_state(name: str, seed: int = 0, old: bool = False, **sizes) -> dict[str, torch.Tensor]:
    """A state dict with exactly the manifest's keys but smaller widths (``sizes`` override the t2i kwargs).

    The converter's plan of the full-size manifest names the reference key of every t2i tensor; a t2i module of the
    same structure at the smaller widths is written back under those names (1x1 conv weights regain their
    ``[C, W, 1, 1]`` shape). Only for networks whose tensors need no permutation (AttnGAN G_NET). ``old``: without
    ``num_batches_tracked``, as PyTorch 0.3/0.4 saved.
    """
    from t2i.models.factory import build_from_spec
    from t2i.models.reference import plan_reference

    shapes = {k: tuple(s) for k, s, _ in manifest(name)["state_dict"]}
    plan = plan_reference(shapes)
    if any(fn.__name__ != "_squeeze_1x1" for fn in plan.transforms.values()):
        raise ValueError(f"{name} has permuted tensors; tiny_reference_state cannot invert them")
    torch.manual_seed(seed)
    module = build_from_spec({"target": plan.spec["target"], "kwargs": {**plan.spec["kwargs"], **sizes}})
    state = {}
    for key, value in module.state_dict().items():
        if old and key.endswith("num_batches_tracked"):
            continue
        if value.is_floating_point():
            value = torch.randn_like(value) * 0.1 + (1.0 if key.endswith(("running_var", "bn.weight")) else 0.0)
            value = value.abs() + 0.5 if key.endswith("running_var") else value
        ref = plan.source[key]
        state[ref] = value[:, :, None, None] if key in plan.transforms else value
    assert set(state) == {k for k in shapes if not (old and k.endswith("num_batches_tracked"))}, "not the manifest's keys"
    return state

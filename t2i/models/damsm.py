"""The DAMSM encoders on disk: saved and loaded on their own, whoever trained them (STYLE.md 5).

A DAMSM run directory holds, for each encoder, ``<name>.safetensors`` (weights) and ``<name>.json`` (the
spec that rebuilds it, its kind, and for the text encoder the vocabulary it was trained with), written by
:func:`t2i.models.factory.save_module`::

    runs/<data>/damsm/text_encoder.{safetensors,json}    kind damsm_text, vocab, config
    runs/<data>/damsm/image_encoder.{safetensors,json}   kind damsm_image, config

Files written before this layout (``text_encoder.pt`` / ``image_encoder.pt``: a t2i checkpoint holding
``{"class", "kwargs", "state_dict"}``) still load: the class name is mapped onto the model allow-list and
built through the same factory. The GAN recipe, the evaluation's R-precision scorer (:class:`DAMSMScorer`,
here) and the DAMSM trainer all come here; none of them imports another's module to load an encoder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from t2i.data.text import Vocabulary
from t2i.errors import CheckpointError
from t2i.io import load_checkpoint, load_state_dict_strict
from t2i.models.factory import build_from_spec, load_module, make_spec, read_module_record, save_module

TEXT_KIND = "damsm_text"
IMAGE_KIND = "damsm_image"
TEXT_NAME = "text_encoder"
IMAGE_NAME = "image_encoder"

# The class names of the ``.pt`` files written before save_module, mapped onto the allow-list.
_LEGACY_CLASSES = {
    "RNNTextEncoder": "t2i.models.text_encoders.RNNTextEncoder",
    "BertTextEncoder": "t2i.models.text_encoders.BertTextEncoder",
    "InceptionImageEncoder": "t2i.models.image_encoders.InceptionImageEncoder",
    "LightImageEncoder": "t2i.models.image_encoders.LightImageEncoder",
}


def vocab_dict(vocab: Any) -> dict | None:
    """A vocabulary (``Vocabulary`` or its dict) as a plain dict, or None."""
    if vocab is None:
        return None
    if isinstance(vocab, dict):
        return vocab
    return vocab.to_dict() if hasattr(vocab, "to_dict") else None


def _weights_path(path: str | os.PathLike, name: str) -> Path:
    path = Path(path)
    return path / f"{name}.safetensors" if path.is_dir() or not path.suffix else path.with_suffix(".safetensors")


def save_text_encoder(path: str | os.PathLike, text_encoder: nn.Module, vocab: Any = None,
                      config: dict | None = None) -> Path:
    """Write a DAMSM text encoder (weights, spec, vocabulary) as ``path`` (a folder or a weights file name)."""
    out = _weights_path(path, TEXT_NAME)
    save_module(out, text_encoder, kind=TEXT_KIND, vocab=vocab_dict(vocab), config=config or {})
    return out


def save_image_encoder(path: str | os.PathLike, image_encoder: nn.Module, config: dict | None = None) -> Path:
    """Write a DAMSM image encoder (the Inception trunk's weights are in the state dict, so the ImageNet file
    is not needed to rebuild it)."""
    out = _weights_path(path, IMAGE_NAME)
    save_module(out, image_encoder, kind=IMAGE_KIND, config=config or {})
    return out


def find_encoder(source: str | os.PathLike, name: str) -> Path:
    """The file holding encoder ``name`` in ``source``: a run directory, a ``.safetensors``/``.json`` file or
    an old ``.pt`` file.

    Raises:
        CheckpointError: nothing of that name is there.
    """
    path = Path(source)
    if path.is_dir():
        for candidate in (path / f"{name}.json", path / f"{name}.pt"):
            if candidate.is_file():
                return candidate.with_suffix(".safetensors") if candidate.suffix == ".json" else candidate
        raise CheckpointError(f"no DAMSM {name.replace('_', ' ')} in {path} ({name}.safetensors + {name}.json, "
                              f"or {name}.pt); train it with 'python tools/train.py model=damsm'")
    if path.suffix == ".json":
        return path.with_suffix(".safetensors")
    return path


def _read(source: str | os.PathLike, name: str, kind: str, map_location: str | torch.device) -> tuple[dict, Path]:
    """``(record, weights_path)``: the record has ``spec``, ``kind``, ``vocab``...; ``state_dict`` for old files."""
    path = find_encoder(source, name)
    if path.suffix == ".safetensors":
        record = read_module_record(path)
        if record.get("kind") != kind:
            raise CheckpointError(f"{path} holds a '{record.get('kind')}' model, but a '{kind}' one is needed here")
        return record, path
    data = load_checkpoint(path, kind, map_location)  # an old .pt export
    target = _LEGACY_CLASSES.get(data.get("class"))
    if target is None or not isinstance(data.get("kwargs"), dict) or not isinstance(data.get("state_dict"), dict):
        raise CheckpointError(f"{path} is not a DAMSM {name} export (class {data.get('class')!r}); "
                              f"use the {name} written by DAMSM training")
    return {**data, "spec": make_spec(target, **data["kwargs"])}, path


def _build(record: dict, path: Path, what: str) -> nn.Module:
    if path.suffix == ".safetensors":
        return load_module(path, record["spec"], what)
    module = build_from_spec(record["spec"])
    load_state_dict_strict(module, record["state_dict"], what, path)
    return module


def text_encoder_vocab(source: str | os.PathLike) -> dict | None:
    """The vocabulary a saved DAMSM text encoder was trained with (None when its file carries none)."""
    return _read(source, TEXT_NAME, TEXT_KIND, "cpu")[0].get("vocab")


def load_text_encoder(source: str | os.PathLike, vocab: Any = None, freeze: bool = True,
                      map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a DAMSM text encoder, checking it against ``vocab``.

    Args:
        source: a DAMSM run directory, or the encoder's file (see :func:`find_encoder`).
        vocab: the data vocabulary (``Vocabulary`` or its dict) the caller will tokenise with; None: no check.
        freeze: return it with ``requires_grad_(False).eval()`` (as GAN training uses it).

    Raises:
        CheckpointError: not a DAMSM text encoder, or its vocabulary or sizes do not match.
    """
    record, path = _read(source, TEXT_NAME, TEXT_KIND, map_location)
    kwargs = record["spec"].get("kwargs") or {}
    if vocab is not None and kwargs.get("vocab_size") is not None:
        if len(vocab) != kwargs["vocab_size"]:
            raise CheckpointError(f"text encoder {path} was trained with a vocabulary of {kwargs['vocab_size']} tokens "
                                  f"but the data has {len(vocab)}; train DAMSM on this data or use its vocabulary")
        ours, theirs = vocab_dict(vocab), record.get("vocab")
        if ours and theirs and ours.get("itos") != theirs.get("itos"):
            raise CheckpointError(f"text encoder {path} has a vocabulary of the same size but other words; "
                                  "use the vocabulary it was trained with")
    encoder = _build(record, path, "text encoder")
    return encoder.requires_grad_(False).eval() if freeze else encoder


def load_image_encoder(source: str | os.PathLike, embed_dim: int | None = None, freeze: bool = True,
                       map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a DAMSM image encoder.

    Args:
        source: a DAMSM run directory, or the encoder's file (see :func:`find_encoder`).
        embed_dim: expected embedding size (that of the text encoder); None: no check.

    Raises:
        CheckpointError: not a DAMSM image encoder, or its embedding size differs.
    """
    record, path = _read(source, IMAGE_NAME, IMAGE_KIND, map_location)
    stored = (record["spec"].get("kwargs") or {}).get("embed_dim")
    if embed_dim is not None and stored is not None and stored != embed_dim:
        raise CheckpointError(f"image encoder {path} has embedding size {stored} but {embed_dim} is needed; "
                              "use the image encoder trained with this text encoder")
    encoder = _build(record, path, "image encoder")
    return encoder.requires_grad_(False).eval() if freeze else encoder


class DAMSMScorer:
    """A frozen DAMSM pair scoring images against captions (R-precision).

    Args:
        text_encoder: DAMSM text encoder (``encode_captions(CaptionBatch) -> TextEmbedding``).
        image_encoder: DAMSM image encoder (``images -> (regions, global)``).
        vocab: the vocabulary the text encoder was trained with.
        words_num: longest caption kept (first words, as in evaluation).
        device: where to run.
    """

    def __init__(self, text_encoder: nn.Module, image_encoder: nn.Module, vocab: Vocabulary, words_num: int = 18,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.text_encoder = text_encoder.to(self.device).requires_grad_(False).eval()
        self.image_encoder = image_encoder.to(self.device).requires_grad_(False).eval()
        self.vocab = vocab
        self.words_num = words_num
        self.files: list[Path] = []

    @classmethod
    def from_dir(cls, folder: str | os.PathLike, vocab: Vocabulary | None = None, words_num: int = 18,
                 device: str | torch.device = "cpu") -> "DAMSMScorer":
        """Load the text and image encoders of a DAMSM run directory (:mod:`t2i.models.damsm`).

        ``vocab`` is used only when the text encoder's file carries none.

        Raises:
            CheckpointError: a file is missing or of another kind.
        """
        folder = Path(folder)
        try:
            text_path, image_path = find_encoder(folder, TEXT_NAME), find_encoder(folder, IMAGE_NAME)
        except CheckpointError as err:
            raise CheckpointError(f"no DAMSM for R-precision: {err}; or pass metrics.r_precision.damsm=DIR") from None
        for p in (text_path, image_path):
            if not p.is_file():
                raise CheckpointError(f"no DAMSM for R-precision: {p} is missing; train it with 'python tools/train.py "
                                      "model=damsm' or pass metrics.r_precision.damsm=DIR")
        stored = text_encoder_vocab(text_path)
        vocab = Vocabulary.from_dict(stored) if stored else vocab
        if vocab is None:
            raise CheckpointError(f"{text_path} carries no vocabulary and none was given; re-export the DAMSM")
        text_encoder = load_text_encoder(text_path, vocab=vocab)
        image_encoder = load_image_encoder(image_path, embed_dim=int(getattr(text_encoder, "out_dim", 0)) or None)
        scorer = cls(text_encoder, image_encoder, vocab, words_num, device)
        scorer.files = [text_path, image_path]
        return scorer

    @torch.no_grad()
    def sentence_vectors(self, captions: Sequence[str], batch_size: int = 256, progress: bool = False) -> Tensor:
        """``[N, D]`` sentence vectors of caption strings (unknown words dropped; first ``words_num`` words kept)."""
        out = []
        for start in tqdm(range(0, len(captions), batch_size), desc="DAMSM captions", disable=not progress, leave=False):
            encoded = self.vocab.encode_captions(list(captions[start:start + batch_size]), self.words_num, empty="end")
            out.append(self.text_encoder.encode_captions(encoded.to(self.device)).sentence.float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def image_vectors(self, images: Tensor) -> Tensor:
        """``[B, D]`` global image vectors of ``[B, 3, H, W]`` images in [-1, 1]."""
        _, global_feat = self.image_encoder(images.to(self.device))
        return global_feat.float().cpu()

"""Tiny exports written by the trainers' own writer (t2i.export.write_export), untrained, for the web-demo tests:
AttnGAN (init -> attention), AttnGAN with a DRAW stage, alignDRAW, and a folder of another kind."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from t2i.data.text import Vocabulary
from t2i.export import write_export
from t2i.models.factory import build_from_spec, make_spec

WORDS = ["this", "bird", "has", "a", "with", "and", "small", "green", "red", "yellow", "black", "crown", "wings",
         "belly", "tail"]
WORDS_NUM = 6


def tiny_vocab() -> Vocabulary:
    return Vocabulary(WORDS, counts={w: 100 - i for i, w in enumerate(WORDS)})


def write_gan_export(folder: Path, stages=("init", "attention"), vocab: Vocabulary | None = None, seed: int = 0) -> Path:
    """A GAN export 16 -> 32 px (``stages`` e.g. ``["init", "attention"]`` or ``["init", "draw"]``)."""
    vocab = vocab or tiny_vocab()
    torch.manual_seed(seed)
    text_encoder = build_from_spec(make_spec("t2i.models.text_encoders.RNNTextEncoder", vocab_size=len(vocab),
                                             word_dim=8, hidden_dim=4, dropout=0.0))
    generator = build_from_spec(make_spec("t2i.models.generator.MultiStageGenerator", stages=list(stages), ngf=8,
                                          z_dim=6, c_dim=5, sent_dim=8, word_dim=8, res_blocks=1, base_size=16,
                                          stage_options={"draw": {"steps": 3, "hidden_dim": 8, "write_n": 4}}))
    return write_export(folder, "gan", {"generator": generator, "text_encoder": text_encoder}, vocab.to_dict(),
                        {"name": "tiny", "z_dim": 6, "words_num": WORDS_NUM}, step=0)


def write_aligndraw_export(folder: Path, vocab: Vocabulary | None = None) -> Path:
    vocab = vocab or tiny_vocab()
    torch.manual_seed(0)
    model = build_from_spec(make_spec("t2i.models.aligndraw.AlignDRAW", vocab_size=len(vocab), height=8, width=8,
                                      channels=3, steps=3, z_dim=4, enc_dim=8, dec_dim=8, read_n=2, write_n=2,
                                      word_dim=6, lang_dim=4, align_dim=5))
    return write_export(folder, "aligndraw", {"generator": model}, vocab.to_dict(),
                        {"name": "aligndraw", "words_num": WORDS_NUM}, step=0)


def write_damsm_like(folder: Path) -> Path:
    """A folder with a model.json of another kind (the picker must not offer it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps({"format": "t2i-export", "kind": "damsm"}))
    return folder

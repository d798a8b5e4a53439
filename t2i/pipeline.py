"""Text2ImagePipeline: caption(s) -> images, per-stage images, word-attention maps and DRAW canvases.

Loads an exported model directory (:mod:`t2i.export`: model.json, generator and text encoder weights,
vocab.json). No training config, data set or Hydra is needed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from t2i.data.text import Vocabulary
from t2i.export import read_export
from t2i.models.layers import fold_batchnorm
from t2i.runtime import Precision
from t2i.structures import CaptionBatch, TextEmbedding

log = logging.getLogger(__name__)


@dataclass
class PipelineOutput:
    """Generated images ``[N, 3, H, W]`` in [-1, 1] (final stage), plus everything to explain them.

    ``stage_images``: per stage ``[N, 3, H_s, W_s]``; ``attn_maps``: per attention stage ``[N, T, h, w]``;
    ``words``: the words each row of the attention maps refers to; ``canvases``: DRAW canvas steps
    ``[N, steps, 3, H, W]`` or None; ``captions``: the caption of each image.
    """

    images: Tensor
    stage_images: list[Tensor]
    attn_maps: list[Tensor]
    words: list[list[str]]
    captions: list[str]
    canvases: Tensor | None = None
    unknown: list[list[str]] = field(default_factory=list)


class Text2ImagePipeline:
    """Generate images from captions with a trained generator and its text encoder."""

    def __init__(self, generator: torch.nn.Module, text_encoder: torch.nn.Module | None, vocab: Vocabulary,
                 z_dim: int, words_num: int = 18, device: str | torch.device = "cpu", precision: str = "fp32"):
        self.device = torch.device(device)
        self.generator = generator.to(self.device).eval().requires_grad_(False)
        # alignDRAW carries its own caption encoder: text_encoder is None and generation goes through
        # generator.generate(captions, lengths).
        self.text_encoder = text_encoder.to(self.device).eval().requires_grad_(False) if text_encoder else None
        self.vocab = vocab
        self.z_dim = z_dim
        self.words_num = words_num
        self.precision = Precision(precision, self.device)

    @classmethod
    def from_export(cls, path: str | Path, device: str | torch.device = "cpu", precision: str = "fp32",
                    fold_bn: bool = True):
        """Load an export directory; ``fold_bn`` folds the generator's BatchNorm into its convs (inference only)."""
        export = read_export(path)
        if fold_bn:
            fold_batchnorm(export.generator.eval())
        return cls(export.generator, export.text_encoder, export.vocab, z_dim=export.z_dim,
                   words_num=export.words_num, device=device, precision=precision)

    # ------------------------------------------------------------------ text
    def encode_captions(self, captions: Sequence[str] | str) -> CaptionBatch:
        """Tokenise as AttnGAN does (:meth:`Vocabulary.encode_captions`); unknown words are dropped with a warning.

        Raises:
            CaptionError: a caption that is empty or has no known word.
        """
        return self.vocab.encode_captions(captions, self.words_num)

    @torch.no_grad()
    def embed(self, encoded: CaptionBatch) -> TextEmbedding:
        """Text features of encoded captions: the text encoder reads them as in training."""
        return self.text_encoder.encode_captions(encoded.to(self.device))

    # ------------------------------------------------------------------ images
    def noise(self, n: int, seed: int) -> Tensor:
        return torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(seed)).to(self.device)

    @torch.no_grad()
    def generate(self, text: TextEmbedding, noise: Tensor, seed: int = 0) -> PipelineOutput:
        """Run the generator; conditioning augmentation samples as in AttnGAN, from an RNG seeded by ``seed``."""
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), self.precision.autocast():
            torch.manual_seed(seed)
            out = self.generator(noise, text)
        canvases = out.canvases.float() if out.canvases is not None else None
        return PipelineOutput(images=out.images[-1].float(), stage_images=[x.float() for x in out.images],
                              attn_maps=[a.float() for a in out.attn_maps], words=[], captions=[],
                              canvases=canvases)

    def generate_encoded(self, encoded: CaptionBatch, seed: int = 0) -> PipelineOutput:
        """One image per encoded caption, noise from ``seed``: the GAN path (text encoder, noise, generator) or
        alignDRAW's own caption encoder and prior."""
        if self.text_encoder is None:
            return self._generate_aligndraw(encoded, 1, seed)
        return self.generate(self.embed(encoded), self.noise(len(encoded.lengths), seed), seed)

    def __call__(self, captions: str | Sequence[str], num_images: int = 1, seed: int = 0) -> PipelineOutput:
        """``num_images`` images for every caption (rows: caption 0's images first)."""
        encoded = self.encode_captions(captions)
        if self.text_encoder is None:
            return self._generate_aligndraw(encoded, num_images, seed)
        text = self.embed(encoded)
        reps = torch.arange(len(encoded.texts)).repeat_interleave(num_images).to(self.device)
        text = TextEmbedding(text.words[reps], text.sentence[reps], text.pad_mask[reps])
        out = self.generate(text, self.noise(len(reps), seed), seed)
        out.words = [encoded.words[i] for i in reps.tolist()]
        out.captions = [encoded.texts[i] for i in reps.tolist()]
        out.unknown = encoded.unknown
        return out

    @torch.no_grad()
    def _generate_aligndraw(self, encoded: CaptionBatch, num_images: int, seed: int) -> PipelineOutput:
        reps = torch.arange(len(encoded.texts)).repeat_interleave(num_images)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        out = self.generator.generate(encoded.ids[reps].to(self.device), encoded.lengths[reps].to(self.device),
                                      generator=gen)
        canvases = out.canvases.float() * 2 - 1  # sigmoid(c_t) in [0, 1] -> [-1, 1]
        return PipelineOutput(images=canvases[:, -1], stage_images=[canvases[:, -1]], attn_maps=[],
                              words=[encoded.words[i] for i in reps.tolist()],
                              captions=[encoded.texts[i] for i in reps.tolist()], canvases=canvases,
                              unknown=encoded.unknown)

    def interpolate_captions(self, caption_a: str, caption_b: str, steps: int = 8, seed: int = 0) -> PipelineOutput:
        """Same noise, sentence vector interpolated linearly from caption A to caption B.

        Word features are taken from the nearer caption, so attention stages stay well defined.
        """
        encoded = self.encode_captions([caption_a, caption_b])
        text = self.embed(encoded)
        alphas = torch.linspace(0, 1, steps, device=self.device)
        sent = torch.lerp(text.sentence[0:1].expand(steps, -1), text.sentence[1:2].expand(steps, -1), alphas[:, None])
        nearer = (alphas >= 0.5).long()
        mixed = TextEmbedding(text.words[nearer], sent, text.pad_mask[nearer])
        out = self.generate(mixed, self.noise(1, seed).expand(steps, -1), seed)
        out.words = [encoded.words[i] for i in nearer.tolist()]
        out.captions = [f"{a:.2f}" for a in alphas.tolist()]
        return out

    def interpolate_noise(self, caption: str, steps: int = 8, seed_a: int = 0, seed_b: int = 1) -> PipelineOutput:
        """One caption, noise moved along the great circle (slerp) between two seeds."""
        encoded = self.encode_captions([caption])
        text = self.embed(encoded)
        za, zb = self.noise(1, seed_a)[0], self.noise(1, seed_b)[0]
        omega = torch.arccos(torch.clamp(torch.dot(za / za.norm(), zb / zb.norm()), -1, 1))
        alphas = torch.linspace(0, 1, steps, device=self.device)
        if omega.abs() < 1e-6:
            z = torch.lerp(za.expand(steps, -1), zb.expand(steps, -1), alphas[:, None])
        else:
            z = (torch.sin((1 - alphas) * omega)[:, None] * za + torch.sin(alphas * omega)[:, None] * zb) / torch.sin(omega)
        idx = torch.zeros(steps, dtype=torch.long, device=self.device)
        out = self.generate(TextEmbedding(text.words[idx], text.sentence[idx], text.pad_mask[idx]), z, seed_a)
        out.words = [encoded.words[0]] * steps
        out.captions = [caption] * steps
        return out


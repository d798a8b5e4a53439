"""The reference AttnGAN's training iteration, imported at run time from a local checkout, for side-by-side timing.

``tools/bench.py reference.attngan=PATH`` times t2i's training step against the released AttnGAN code
(taoxugit/AttnGAN, ``code/``) on the same synthetic inputs. Nothing of the reference is vendored or
downloaded: its modules are imported from ``PATH`` and its iteration is driven exactly as ``trainer.py``'s
``condGANTrainer.train`` loop does (text encoding, ``netG``, one update per ``netsD[i]`` with
``discriminator_loss``, the ``generator_loss + KL_loss`` update, ``avg_p.mul_(0.999).add_(0.001 * p)``).

The reference is Python-2-era code; it runs unedited on Python 3.11 / torch 2.x with these import-time
patches, all inside this process and none written to its files:

- ``easydict`` (``miscc/config.py``): a minimal attribute dictionary is put in ``sys.modules`` when the
  package is not installed;
- ``model_zoo.load_url`` (``CNN_ENCODER``, which fetches the ImageNet Inception-v3): returns the state dict
  of a randomly initialised torchvision ``inception_v3``, so nothing is downloaded (timing needs no
  trained weights);
- ``miscc/losses.py`` is compiled from its source with ``x.data[0]`` (0-dim indexing, an error since
  PyTorch 0.4) read as ``x.item()`` and its ``uint8`` masks (``.astype(np.uint8)``, ``torch.ByteTensor(...)``;
  ``masked_fill_`` takes only booleans now) made boolean: the same values, the same operations.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import re
import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from t2i.errors import ConfigError

log = logging.getLogger(__name__)

_MODULES = ("model", "GlobalAttention", "miscc", "miscc.config", "miscc.losses")


@dataclass
class ReferenceSettings:
    """The reference configuration (``cfg/bird_attn2.yml`` names) of one side-by-side case."""

    stages: int = 3              # TREE.BRANCH_NUM
    ngf: int = 32                # GAN.GF_DIM
    ndf: int = 64                # GAN.DF_DIM
    z_dim: int = 100             # GAN.Z_DIM
    c_dim: int = 100             # GAN.CONDITION_DIM
    res_blocks: int = 2          # GAN.R_NUM
    embed_dim: int = 256         # TEXT.EMBEDDING_DIM
    words_num: int = 18          # TEXT.WORDS_NUM
    lambda_damsm: float = 5.0    # TRAIN.SMOOTH.LAMBDA
    gammas: tuple[float, float, float] = (4.0, 5.0, 10.0)
    lr_g: float = 2e-4
    lr_d: float = 2e-4


def code_dir(path: str | Path) -> Path:
    """The reference's ``code/`` folder from a checkout root or the folder itself (one clear error otherwise)."""
    p = Path(path).expanduser()
    for candidate in (p, p / "code"):
        if (candidate / "model.py").is_file() and (candidate / "miscc" / "losses.py").is_file():
            return candidate
    raise ConfigError(f"reference.attngan={path} is not an AttnGAN checkout: no model.py and miscc/losses.py "
                      "in it or in its code/ folder (give the taoxugit/AttnGAN checkout)")


class _EasyDict(dict):
    """What ``miscc/config.py`` needs of ``easydict.EasyDict``: a dict whose keys are attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


def _patched_losses_source(text: str) -> str:
    text = re.sub(r"\.data\[0\]", ".item()", text)
    text = text.replace(".astype(np.uint8)", ".astype(bool)")
    return text.replace("torch.ByteTensor(", "torch.BoolTensor(")


def load_reference(path: str | Path) -> dict[str, types.ModuleType]:
    """Import the reference's ``model``, ``GlobalAttention``, ``miscc.config`` and ``miscc.losses`` from ``path``.

    Returns:
        ``{"model", "config", "losses"}`` modules; ``config.cfg`` is the reference's global configuration.
    """
    root = code_dir(path)
    for name in _MODULES:  # a second checkout in the same process replaces the first
        sys.modules.pop(name, None)
    try:
        importlib.import_module("easydict")
    except ImportError:
        shim = types.ModuleType("easydict")
        shim.EasyDict = _EasyDict
        sys.modules["easydict"] = shim
    sys.path.insert(0, str(root))
    try:
        config = importlib.import_module("miscc.config")
        model = importlib.import_module("model")
        losses = types.ModuleType("miscc.losses")
        losses.__file__ = str(root / "miscc" / "losses.py")
        sys.modules["miscc.losses"] = losses
        source = _patched_losses_source((root / "miscc" / "losses.py").read_text())
        exec(compile(source, losses.__file__, "exec"), losses.__dict__)
    finally:
        sys.path.remove(str(root))
    return {"model": model, "config": config, "losses": losses}


def configure(cfg, s: ReferenceSettings) -> None:
    """Set the reference's global ``cfg`` as ``cfg/bird_attn2.yml`` does, at ``s``'s sizes, on the CPU."""
    cfg.CUDA = False
    cfg.TRAIN.FLAG = True
    cfg.TREE.BRANCH_NUM = s.stages
    cfg.GAN.GF_DIM, cfg.GAN.DF_DIM, cfg.GAN.Z_DIM = s.ngf, s.ndf, s.z_dim
    cfg.GAN.CONDITION_DIM, cfg.GAN.R_NUM = s.c_dim, s.res_blocks
    cfg.TEXT.EMBEDDING_DIM, cfg.TEXT.WORDS_NUM = s.embed_dim, s.words_num
    cfg.TRAIN.SMOOTH.GAMMA1, cfg.TRAIN.SMOOTH.GAMMA2, cfg.TRAIN.SMOOTH.GAMMA3 = s.gammas
    cfg.TRAIN.SMOOTH.LAMBDA = s.lambda_damsm


def _random_inception_state() -> dict:
    from torchvision.models import inception_v3

    return inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()


class ReferenceStep:
    """One training iteration of the reference AttnGAN (``trainer.py``), on fixed synthetic inputs.

    Args:
        modules: :func:`load_reference`'s result.
        settings: sizes and loss weights.
        vocab_size: the text encoder's vocabulary.
        images: one ``[B, 3, R, R]`` real image batch per stage (64, 128, 256 px).
        captions / lengths: ``[B, T]`` token ids (0 = padding) and ``[B]`` lengths.
        class_ids: ``[B]`` classes (the DAMSM losses mask same-class pairs).
        seed: initialisation and noise.
    """

    def __init__(self, modules: dict, settings: ReferenceSettings, vocab_size: int, images: list[torch.Tensor],
                 captions: torch.Tensor, lengths: torch.Tensor, class_ids: torch.Tensor, seed: int = 0):
        model, losses, cfg = modules["model"], modules["losses"], modules["config"].cfg
        configure(cfg, settings)
        self.model, self.losses, self.settings = model, losses, settings
        torch.manual_seed(seed)
        zoo = model.model_zoo.load_url
        model.model_zoo.load_url = lambda *args, **kwargs: _random_inception_state()
        try:
            with contextlib.redirect_stdout(io.StringIO()) as said, warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torchvision on inception_v3()'s default init
                self.image_encoder = model.CNN_ENCODER(settings.embed_dim)  # prints "Load pretrained model from"
        finally:
            model.model_zoo.load_url = zoo
        log.debug("reference CNN_ENCODER (random Inception-v3 weights): %s", said.getvalue().strip())
        self.image_encoder.requires_grad_(False).eval()
        with warnings.catch_warnings():  # LSTM(dropout=0.5, num_layers=1) warns; the reference keeps it
            warnings.simplefilter("ignore", UserWarning)
            self.text_encoder = model.RNN_ENCODER(vocab_size, nhidden=settings.embed_dim).requires_grad_(False).eval()
        self.generator = model.G_NET()
        nets = [model.D_NET64, model.D_NET128, model.D_NET256]
        self.discriminators = [nets[i]() for i in range(settings.stages)]
        self.avg_param_g = [p.detach().clone() for p in self.generator.parameters()]  # copy_G_params
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=settings.lr_g, betas=(0.5, 0.999))
        self.opt_d = [torch.optim.Adam(d.parameters(), lr=settings.lr_d, betas=(0.5, 0.999))
                      for d in self.discriminators]
        # datasets.prepare_data: the batch sorted by caption length, longest first (pack_padded_sequence)
        order = torch.argsort(lengths, descending=True, stable=True)
        self.images = [x[order] for x in images[:settings.stages]]
        self.captions, self.lengths = captions[order], lengths[order]
        self.class_ids = class_ids[order].numpy()
        b = len(order)
        self.real_labels, self.fake_labels = torch.ones(b), torch.zeros(b)  # trainer.prepare_labels
        self.match_labels = torch.arange(b)
        self.noise = torch.empty(b, settings.z_dim)

    def __call__(self) -> dict[str, float]:
        """``condGANTrainer.train``'s loop body: steps (1)-(4) and the generator average."""
        with warnings.catch_warnings():  # its implicit-dim Softmax and align_corners Upsample warn every call
            warnings.simplefilter("ignore", UserWarning)
            return self._iteration()

    def _iteration(self) -> dict[str, float]:
        L = self.losses
        b = len(self.lengths)
        hidden = self.text_encoder.init_hidden(b)  # (1) text embeddings
        words_embs, sent_emb = self.text_encoder(self.captions, self.lengths, hidden)
        words_embs, sent_emb = words_embs.detach(), sent_emb.detach()
        mask = self.captions == 0
        mask = mask[:, :words_embs.size(2)]
        self.noise.normal_(0, 1)  # (2) fake images
        fake_imgs, _, mu, logvar = self.generator(self.noise, sent_emb, words_embs, mask)
        err_d_total = 0.0  # (3) each D
        for i, d in enumerate(self.discriminators):
            d.zero_grad()
            err_d = L.discriminator_loss(d, self.images[i], fake_imgs[i], sent_emb, self.real_labels, self.fake_labels)
            err_d.backward()
            self.opt_d[i].step()
            err_d_total += err_d.item()  # the reference formats errD.data[0] into its log line each step
        self.generator.zero_grad()  # (4) G
        err_g_total, _ = L.generator_loss(self.discriminators, self.image_encoder, fake_imgs, self.real_labels,
                                          words_embs, sent_emb, self.match_labels, self.lengths, self.class_ids)
        kl = L.KL_loss(mu, logvar)
        err_g_total = err_g_total + kl
        kl.item()  # G_logs += 'kl_loss: %.2f' % kl_loss.data[0]
        err_g_total.backward()
        self.opt_g.step()
        with torch.no_grad():
            for p, avg_p in zip(self.generator.parameters(), self.avg_param_g):
                avg_p.mul_(0.999).add_(p.detach(), alpha=0.001)  # avg_p.mul_(0.999).add_(0.001, p.data)
        return {"d_total": err_d_total, "g_total": float(err_g_total.item())}


def reference_step(path: str | Path, settings: ReferenceSettings, vocab_size: int, images, captions, lengths,
                   class_ids, seed: int = 0) -> Callable[[], dict[str, float]]:
    """Import the reference from ``path`` and build its iteration on these inputs (see :class:`ReferenceStep`)."""
    return ReferenceStep(load_reference(path), settings, vocab_size, images, captions, lengths, class_ids, seed)

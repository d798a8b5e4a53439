"""Released reference checkpoints -> t2i export directories (``tools/convert.py``).

:func:`convert_release` reads the released files of AttnGAN (``bird_AttnGAN2.pth`` / ``coco_AttnGAN2.pth``, the
DAMSM ``text_encoder200.pth`` / ``image_encoder200.pth`` and the vocabulary of ``captions.pickle``), StackGAN++
(``netG_210000.pth``) or StackGAN v1 (Stage-I / Stage-II ``netG_epoch_*.pth``), plus discriminators where
given, maps every tensor onto t2i's modules (:mod:`t2i.models.reference`: strict, shapes checked, ``module.``
prefixes stripped, PyTorch 0.3/0.4 files without ``num_batches_tracked`` accepted) and writes an export::

    out/
      model.json                     format t2i-export, kind, model_spec, converted_from (files, SHA-256, key counts)
      generator.{safetensors,json}   the released generator                 } t2i.models.factory.save_module,
      discriminator<i>.{...}         the discriminators, stage i (when given) } weights + spec
      text_encoder.{...}, vocab.json AttnGAN: the DAMSM text encoder and captions.pickle's words
      damsm/text_encoder.{...}       AttnGAN: the DAMSM as a DAMSM run folder (t2i.models.damsm): R-precision,
      damsm/image_encoder.{...}      and encoder.checkpoint= of training; the image encoder when given
      MODEL_CARD.md                  what was converted and how it differs from the released code

An AttnGAN export is an ordinary ``kind: gan`` export: ``tools/generate.py`` and ``tools/evaluate.py`` use it
unchanged. StackGAN and StackGAN++ were trained on 1024-d char-CNN-RNN sentence embeddings, which t2i does not
have; their exports are ``kind: gan_embedding`` (the caption tools refuse them with one line) and generate from
embeddings the user supplies, :func:`generate_from_embeddings`.

Files are read with ``torch.load(weights_only=True)``; the export is written into a temporary folder beside
``out`` and moved into place only when complete, so nothing is half-written and an existing folder is kept
unless ``overwrite`` is set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from t2i.data.text import Vocabulary
from t2i.errors import CheckpointError
from t2i.export import write_export
from t2i.io import atomic_write_json
from t2i.models.damsm import save_image_encoder, save_text_encoder
from t2i.models.factory import build_from_spec, load_module, save_module
from t2i.models.reference import ReferencePlan, convert_state, plan_reference, strip_module_prefix
from t2i.structures import TextEmbedding

log = logging.getLogger(__name__)

EMBEDDING_KIND = "gan_embedding"
DEFAULT_WORDS_NUM = 18  # AttnGAN birds (TEXT.WORDS_NUM); COCO uses 12

REFERENCE_DIFFERENCES = """\
- Word attention: the released `GlobalAttentionGeneral` repeats the padding mask with `mask.repeat(queryL, 1)`,
  so in a batch of captions of different lengths query row `b * queryL + q` gets the mask of caption
  `(b * queryL + q) % B` instead of caption `b`. t2i masks per sample (the intended behaviour); the released
  behaviour is `stage_options: {attention: {reference_mask: true}}` on the generator. A single caption, or captions
  of one length, attend identically either way.
- DAMSM image encoder: the released encoders were trained on a PyTorch whose bilinear `nn.Upsample` behaved as
  `align_corners=True`; the converted `damsm/image_encoder` resizes to 299 with `align_corners=True`.
- Training with this model (if resumed): the released generator loss leaves out the 1/gamma2 of Eq. 10
  (`model.released_eq10=true`), and pairs real image i with the caption of image i+1 of the same batch as the
  mismatched pair (`model.mismatched=next_in_batch`); t2i's defaults are the paper's Eq. 10 and captions of
  other classes.
"""


@dataclass
class ConvertedNetwork:
    """One released file after conversion: its plan, the t2i state dict and where it came from."""

    plan: ReferencePlan
    state: dict[str, Tensor]
    path: Path
    sha256: str
    reference_keys: int

    def record(self) -> dict[str, Any]:
        return {"file": str(self.path), "sha256": self.sha256, "network": self.plan.network,
                "reference_keys": self.reference_keys, "t2i_keys": len(self.state), "t2i_target": self.plan.spec["target"],
                "read_from_shapes": self.plan.info}

    def module(self) -> torch.nn.Module:
        """The t2i module with the converted weights (strictly loaded)."""
        module = build_from_spec(self.plan.spec)
        module.load_state_dict(self.state, strict=True)
        return module


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_reference_state(path: str | os.PathLike) -> dict[str, Tensor]:
    """A released state dict, read with ``torch.load(weights_only=True)`` (legacy PyTorch 0.3/0.4 files too).

    A dict holding the state under ``state_dict`` / ``model`` / ``netG`` is unwrapped; a ``module.`` prefix is removed.

    Raises:
        CheckpointError: missing file, not a readable PyTorch file, a t2i checkpoint, or not a dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"released checkpoint {path} does not exist; check the path")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle that needs code to load
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot read {path} as a PyTorch state dict: {first[:160]}") from None
    if isinstance(data, dict) and data.get("format") == "t2i":
        raise CheckpointError(f"{path} is a t2i checkpoint, not a released reference one; it needs no conversion")
    if isinstance(data, dict):
        for wrapper in ("state_dict", "model", "netG"):
            if isinstance(data.get(wrapper), dict) and len(data) <= 3:
                data = data[wrapper]
                break
    if not isinstance(data, dict) or not data or not all(isinstance(v, Tensor) for v in data.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors (found {type(data).__name__}); "
                              "give the released .pth file of one network")
    return strip_module_prefix({str(k): v for k, v in data.items()})


def convert_file(path: str | os.PathLike, role: str | None = None, image_align_corners: bool = True) -> ConvertedNetwork:
    """Read, recognise and convert one released file.

    Args:
        path: the ``.pth`` file.
        role: the role it must have (``generator``, ``discriminator``, ``text_encoder``, ``image_encoder``).
        image_align_corners: see :func:`t2i.models.reference.plan_reference`.

    Raises:
        CheckpointError: unreadable, unknown, of another role, or not fitting (one line).
    """
    path = Path(path)
    state = read_reference_state(path)
    try:
        plan = plan_reference({k: tuple(v.shape) for k, v in state.items()}, image_align_corners)
    except CheckpointError as exc:
        raise CheckpointError(f"{path} {exc}" if str(exc).startswith("looks like") else f"{path}: {exc}") from None
    if role is not None and plan.role != role:
        raise CheckpointError(f"{path} is a {plan.network} ({plan.role.replace('_', ' ')}), but a "
                              f"{role.replace('_', ' ')} was expected here")
    converted = convert_state(state, plan, plan.build("meta"), str(path))
    log.info("%s: %s, %d reference keys -> %d t2i keys (%s)", path, plan.network, len(state), len(converted),
             ", ".join(f"{k}={v}" for k, v in plan.info.items()))
    return ConvertedNetwork(plan, converted, path, _sha256(path), len(state))


def _text_dim(text: ConvertedNetwork) -> int:
    kwargs = text.plan.spec["kwargs"]
    return int(kwargs["hidden_dim"]) * (2 if kwargs["bidirectional"] else 1)


def _check_damsm(text: ConvertedNetwork, image: ConvertedNetwork | None, vocab: Vocabulary) -> None:
    if len(vocab) != text.plan.spec["kwargs"]["vocab_size"]:
        raise CheckpointError(f"the text encoder {text.path} has {text.plan.spec['kwargs']['vocab_size']} words but "
                              f"the captions.pickle vocabulary has {len(vocab)}; give the captions.pickle of its data set")
    if image is not None and image.plan.info["embed_dim"] != _text_dim(text):
        raise CheckpointError(f"the image encoder {image.path} embeds in {image.plan.info['embed_dim']} dimensions, "
                              f"the text encoder {text.path} in {_text_dim(text)}")


def _check_generator(generator: ConvertedNetwork, text: ConvertedNetwork | None,
                     discriminators: Sequence[ConvertedNetwork]) -> None:
    g = generator.plan
    if text is not None:
        dim = _text_dim(text)
        if g.info.get("sent_dim") != dim or g.info.get("word_dim") not in (None, dim):
            raise CheckpointError(f"{generator.path} reads {g.info.get('sent_dim')}-d sentence vectors but the text encoder "
                                  f"{text.path} makes {dim}-d ones; give the DAMSM the generator was trained with")
    resolutions = g.spec["kwargs"]["resolutions"]
    if discriminators and len(discriminators) != len(resolutions):
        raise CheckpointError(f"{len(discriminators)} discriminators for a generator with {len(resolutions)} stages "
                              f"({resolutions} px); give one per stage, lowest resolution first")
    for i, (d, r) in enumerate(zip(discriminators, resolutions)):
        if d.plan.family != g.family or d.plan.info["resolution"] != r:
            raise CheckpointError(f"{d.path} is a {d.plan.network} ({d.plan.info['resolution']} px) but stage {i + 1} "
                                  f"of the {g.network} makes {r} px images")


def _model_card(meta: dict, networks: Sequence[ConvertedNetwork]) -> str:
    lines = [f"# {meta['model_spec']['name']} (converted)", "",
             f"Converted by `tools/convert.py` from released reference checkpoints into a t2i export (kind "
             f"`{meta['kind']}`).", "", "| file | network | SHA-256 | reference keys | t2i keys |", "|---|---|---|---:|---:|"]
    for n in networks:
        lines.append(f"| `{n.path.name}` | {n.plan.network} | `{n.sha256[:16]}…` | {n.reference_keys} | {len(n.state)} |")
    lines += ["", "Read from the shapes: " + "; ".join(
        f"{n.plan.network}: " + ", ".join(f"{k}={v}" for k, v in n.plan.info.items()) for n in networks), ""]
    if meta["kind"] == EMBEDDING_KIND:
        lines += ["## Text input", "",
                  f"This generator was trained on {meta['text_input']['dim']}-d char-CNN-RNN sentence embeddings "
                  "(Reed et al. 2016), which t2i does not implement. It does not generate from captions: "
                  "`tools/generate.py` and `tools/evaluate.py` refuse it. Generate from embeddings you supply, e.g. "
                  "the released `char-CNN-RNN-embeddings.pickle` of the test set saved as a `.npy` array:", "",
                  "```python", "from t2i.convert import generate_from_embeddings",
                  "images = generate_from_embeddings(export_dir, embeddings)  # [N, 1024] -> [N, 3, H, W] in [-1, 1]",
                  "```", ""]
    else:
        lines += ["## Use", "", "```bash", "python tools/generate.py checkpoint=EXPORT caption=\"a small red bird\"",
                  "python tools/evaluate.py checkpoint=EXPORT data=cub metrics.names=[is,fid,r_precision] "
                  "metrics.inception_weights=/path/pt_inception-2015-12-05-6726825d.pth", "```", ""]
    lines += ["## Differences from the released code", "", REFERENCE_DIFFERENCES]
    return "\n".join(lines)


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    if out.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"{out} already exists; choose another out= or pass overwrite=true")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def convert_release(out_dir: str | os.PathLike, generator: str | os.PathLike | None = None,
                    discriminators: Sequence[str | os.PathLike] = (), text_encoder: str | os.PathLike | None = None,
                    image_encoder: str | os.PathLike | None = None, captions: str | os.PathLike | None = None,
                    words_num: int = DEFAULT_WORDS_NUM, image_align_corners: bool = True,
                    reference_mask: bool = False, overwrite: bool = False) -> Path:
    """Convert released checkpoints into a t2i export at ``out_dir`` (see the module docstring).

    Args:
        out_dir: the export folder to create.
        generator: the released generator (AttnGAN / StackGAN++ ``G_NET``, StackGAN ``STAGE1_G`` / ``STAGE2_G``);
            None converts only the DAMSM (``out_dir`` then holds ``text_encoder.pt`` / ``image_encoder.pt``).
        discriminators: one released discriminator per generator stage, lowest resolution first (optional).
        text_encoder / image_encoder: AttnGAN's DAMSM ``text_encoder*.pth`` / ``image_encoder*.pth``.
        captions: AttnGAN's ``captions.pickle`` (its ``ixtoword`` is the text encoder's vocabulary).
        words_num: longest caption the export keeps (AttnGAN ``TEXT.WORDS_NUM``: 18 birds, 12 COCO).
        image_align_corners: resize of the converted DAMSM image encoder (True: as the released encoders).
        reference_mask: AttnGAN generators mask their word attention as the released code
            (``mask.repeat(queryL, 1)``, see :class:`t2i.models.attention.WordAttention`); default: per sample.
        overwrite: replace an existing ``out_dir``.

    Returns:
        The export folder.

    Raises:
        CheckpointError: a missing, unreadable, unknown or mismatching file (one line), or ``out_dir`` exists.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out} already exists; choose another out= or pass overwrite=true")
    if generator is None and text_encoder is None:
        raise CheckpointError("nothing to convert: give generator=PATH (and for AttnGAN text_encoder=, captions=) "
                              "or text_encoder=PATH to convert a DAMSM")
    g = convert_file(generator, "generator") if generator is not None else None
    if g is not None and reference_mask and g.plan.family == "attngan":
        g.plan.spec["kwargs"]["stage_options"] = {"attention": {"reference_mask": True}}
    ds = [convert_file(p, "discriminator") for p in discriminators]
    text = convert_file(text_encoder, "text_encoder") if text_encoder is not None else None
    image = convert_file(image_encoder, "image_encoder", image_align_corners) if image_encoder is not None else None
    attngan = g is None or g.plan.family == "attngan"
    if attngan and (text is None or captions is None):
        raise CheckpointError("an AttnGAN generator (or a DAMSM) needs its text encoder and vocabulary: pass "
                              "text_encoder=.../text_encoder200.pth and captions=.../captions.pickle")
    if not attngan and (text is not None or image is not None):
        raise CheckpointError(f"{g.path} is a {g.plan.network}, conditioned on char-CNN-RNN embeddings; it has no "
                              "DAMSM text encoder: drop text_encoder=/image_encoder=")
    vocab = Vocabulary.from_attngan_captions_pickle(captions) if attngan else None
    if text is not None:
        _check_damsm(text, image, vocab)
    if g is not None:
        _check_generator(g, text, ds)
    elif ds:
        raise CheckpointError("discriminators need their generator: pass generator=PATH too")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        networks = [n for n in [g, *ds, text, image] if n is not None]
        converted_from = [n.record() for n in networks]
        damsm_dir = tmp / "damsm" if g is not None else tmp
        if text is not None:
            save_text_encoder(damsm_dir / "text_encoder.safetensors", text.module(), vocab,
                              config={"converted_from": [text.record()]})
        if image is not None:
            save_image_encoder(damsm_dir / "image_encoder.safetensors", image.module(),
                               config={"converted_from": [image.record()]})
        if g is not None:
            meta = _export_meta(g, ds, text, words_num, converted_from)
            if meta["kind"] == "gan":
                write_export(tmp, "gan", {"generator": g.module(), "text_encoder": text.module()}, vocab.to_dict(),
                             meta["model_spec"], step=0, config=meta["config"])
            else:
                meta["model_spec"]["generator"] = save_module(tmp / "generator.safetensors", g.module(),
                                                              kind=f"{EMBEDDING_KIND}_generator")
                atomic_write_json(tmp / "model.json", meta)
            for i, d in enumerate(ds):
                save_module(tmp / f"discriminator{i}.safetensors", d.module(), kind="gan_discriminator", stage=i)
            (tmp / "MODEL_CARD.md").write_text(_model_card(meta, networks), encoding="utf-8")
        _publish(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %s (%s)", out, ", ".join(n.plan.network for n in networks))
    return out


def _export_meta(g: ConvertedNetwork, ds: Sequence[ConvertedNetwork], text: ConvertedNetwork | None, words_num: int,
                 converted_from: list[dict]) -> dict:
    family = g.plan.family
    spec: dict[str, Any] = {"name": {"attngan": "attngan", "stackgan2": "stackgan2", "stackgan": "stackgan"}[family],
                            "z_dim": int(g.plan.info["z_dim"]), "words_num": int(words_num), "generator": g.plan.spec,
                            "discriminators": [d.plan.spec for d in ds]}
    meta: dict[str, Any] = {"format": "t2i-export", "version": 1, "step": 0, "model_spec": spec,
                            "config": {"converted_from": converted_from,
                                       "model": {"name": spec["name"], "d_condition": "sentence" if family == "attngan" else "mu"}}}
    if text is not None:
        meta["kind"] = "gan"
    else:
        meta["kind"] = EMBEDDING_KIND
        meta["text_input"] = {"kind": "char-CNN-RNN", "dim": int(g.plan.info["sent_dim"])}
    return meta


# ------------------------------------------------------------------------------------------ embedding exports
def load_embedding_generator(export_dir: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """The generator of a ``gan_embedding`` export (StackGAN / StackGAN++), strictly loaded, in eval mode.

    Raises:
        CheckpointError: not such an export, or its weights do not fit.
    """
    path = Path(export_dir)
    try:
        meta = json.loads((path / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a t2i export ({type(exc).__name__} reading model.json)") from None
    if meta.get("format") != "t2i-export" or meta.get("kind") != EMBEDDING_KIND:
        raise CheckpointError(f"{path} holds a '{meta.get('kind')}' export; generate_from_embeddings needs a "
                              f"converted StackGAN / StackGAN++ export (kind {EMBEDDING_KIND})")
    generator = load_module(path / "generator.safetensors", meta["model_spec"].get("generator"), "generator")
    return generator.eval().requires_grad_(False), meta


@torch.no_grad()
def generate_from_embeddings(export_dir: str | os.PathLike, embeddings: Tensor, seed: int = 0,
                             sample: bool = True) -> list[Tensor]:
    """Images of a StackGAN / StackGAN++ export from sentence embeddings the caller supplies.

    Args:
        export_dir: a ``gan_embedding`` export written by :func:`convert_release`.
        embeddings: ``[N, D]`` char-CNN-RNN sentence embeddings (``D = text_input.dim``, 1024).
        seed: seed of the noise and of conditioning augmentation.
        sample: conditioning augmentation samples (as the references at test time) or uses its mean.

    Returns:
        One ``[N, 3, R_s, R_s]`` tensor in [-1, 1] per stage.

    Raises:
        CheckpointError / ValueError: not such an export, or embeddings of another size.
    """
    generator, meta = load_embedding_generator(export_dir)
    dim = int(meta["text_input"]["dim"])
    embeddings = torch.as_tensor(embeddings, dtype=torch.float32)
    if embeddings.dim() != 2 or embeddings.shape[1] != dim:
        raise ValueError(f"embeddings must be [N, {dim}] (char-CNN-RNN sentence embeddings), got {tuple(embeddings.shape)}")
    n = embeddings.shape[0]
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, int(meta["model_spec"]["z_dim"]), generator=g)
    text = TextEmbedding(words=torch.zeros(n, 1, dim), sentence=embeddings, pad_mask=torch.zeros(n, 1, dtype=torch.bool))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return [x.float() for x in generator(z, text, sample=sample).images]

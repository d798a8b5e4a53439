"""Released reference checkpoints -> t2i exports (t2i/models/reference.py, t2i/convert.py).

State dicts are written with exactly the keys and shapes of the reference networks (tests/fixtures/reference_keys,
from the reference code) and random values, then converted, loaded strictly and run.
"""

import json

import pytest
import torch
import torch.nn.functional as F

from reference_checkpoints import reference_state, write_captions_pickle, write_reference
from t2i.config import compose
from t2i.convert import (EMBEDDING_KIND, convert_file, convert_release, generate_from_embeddings,
                         read_reference_state)
from t2i.data.text import Vocabulary
from t2i.errors import CheckpointError
from t2i.io import save_checkpoint
from t2i.models.damsm import load_image_encoder, load_text_encoder
from t2i.models.factory import load_module
from t2i.pipeline import Text2ImagePipeline
from t2i.recipes.gan import damsm_paths


def test_attngan_birds_release_to_export_that_generates(tmp_path):
    g = write_reference(tmp_path / "bird_AttnGAN2.pth", "AttnGAN__bird_attn2__G_NET", old=True)  # PyTorch 0.3 era
    text = write_reference(tmp_path / "text_encoder200.pth", "AttnGAN__bird__RNN_ENCODER", vocab_size=20, old=True)
    captions = write_captions_pickle(tmp_path / "captions.pickle")
    out = convert_release(tmp_path / "export", generator=g, text_encoder=text, captions=captions)
    meta = json.loads((out / "model.json").read_text())
    assert meta["kind"] == "gan" and meta["model_spec"]["generator"]["kwargs"]["stages"] == ["init", "attention", "attention"]
    record = meta["config"]["converted_from"][0]
    assert record["network"] == "AttnGAN G_NET" and record["reference_keys"] == 82 and record["t2i_keys"] == 97
    pipe = Text2ImagePipeline.from_export(out, fold_bn=False)
    reference = torch.load(g, weights_only=True)
    gen = pipe.generator.state_dict()
    torch.testing.assert_close(gen["stages.1.attention.project.weight"], reference["h_net2.att.conv_context.weight"][:, :, 0, 0])
    torch.testing.assert_close(gen["stages.0.upsample.3.2.running_var"], reference["h_net1.upsample4.2.running_var"])
    torch.testing.assert_close(gen["heads.2.0.weight"], reference["img_net3.img.0.weight"])
    images = pipe(["this bird has a red crown and blue wings"], seed=0)
    assert [tuple(x.shape) for x in images.stage_images] == [(1, 3, 64, 64), (1, 3, 128, 128), (1, 3, 256, 256)]
    assert torch.isfinite(images.images).all() and len(images.attn_maps) == 2
    # the DAMSM text encoder as a t2i checkpoint, as tools/train.py (encoder.checkpoint=<export>/damsm) loads it
    encoder = load_text_encoder(out / "damsm", vocab=pipe.vocab)
    torch.testing.assert_close(encoder.state_dict()["rnn.weight_hh_l0_reverse"],
                               torch.load(text, weights_only=True)["rnn.weight_hh_l0_reverse"])
    assert "mask.repeat(queryL, 1)" in (out / "MODEL_CARD.md").read_text()
    assert not pipe.generator.stages[1].attention.reference_mask
    released = convert_release(tmp_path / "released_mask", generator=g, text_encoder=text, captions=captions,
                               reference_mask=True)
    assert Text2ImagePipeline.from_export(released, fold_bn=False).generator.stages[2].attention.reference_mask


def test_stackgan2_birds_module_prefix_and_embedding_export(tmp_path):
    g = tmp_path / "netG_210000.pth"
    torch.save(reference_state("StackGAN-v2__birds_3stages__G_NET", prefix="module."), g)  # saved from DataParallel
    converted = convert_file(g, "generator")
    reference = read_reference_state(g)
    # jointConv reads [c, h] in the reference, [h, c] in t2i: the same function after the permutation
    h, c = torch.randn(2, 64, 8, 8), torch.randn(2, 128)
    tiled = c[:, :, None, None].expand(-1, -1, 8, 8)
    ref_out = F.conv2d(torch.cat([tiled, h], 1), reference["h_net2.jointConv.0.weight"], padding=1)
    ours = F.conv2d(torch.cat([h, tiled], 1), converted.state["stages.1.joint.0.weight"], padding=1)
    torch.testing.assert_close(ours, ref_out, atol=1e-4, rtol=1e-5)
    out = convert_release(tmp_path / "export", generator=g)
    meta = json.loads((out / "model.json").read_text())
    assert meta["kind"] == EMBEDDING_KIND and meta["text_input"] == {"kind": "char-CNN-RNN", "dim": 1024}
    images = generate_from_embeddings(out, torch.randn(1, 1024), seed=3)
    assert [tuple(x.shape) for x in images] == [(1, 3, 64, 64), (1, 3, 128, 128), (1, 3, 256, 256)]
    assert torch.isfinite(images[-1]).all()
    with pytest.raises(CheckpointError, match="'gan_embedding' model, which cannot generate from captions"):
        Text2ImagePipeline.from_export(out)
    with pytest.raises(ValueError, match=r"\[N, 1024\]"):
        generate_from_embeddings(out, torch.randn(2, 256))
    assert "char-CNN-RNN" in (out / "MODEL_CARD.md").read_text()


def test_stackgan_stage1_with_discriminator(tmp_path):
    g = write_reference(tmp_path / "netG_epoch_90.pth", "StackGAN-Pytorch__coco_s1__STAGE1_G")
    d = write_reference(tmp_path / "netD_epoch_90.pth", "StackGAN-Pytorch__coco_s1__STAGE1_D", old=True)
    converted = convert_file(g)
    reference = read_reference_state(g)
    z, c = torch.randn(3, 100), torch.randn(3, 128)  # STAGE1_G.fc reads cat(noise, c); t2i reads cat(c, z)
    torch.testing.assert_close(F.linear(torch.cat([c, z], 1), converted.state["stages.0.fc.0.weight"]),
                               F.linear(torch.cat([z, c], 1), reference["fc.0.weight"]))
    out = convert_release(tmp_path / "export", generator=g, discriminators=[d])
    meta = json.loads((out / "model.json").read_text())
    assert [s["kwargs"]["uncond"] for s in meta["model_spec"]["discriminators"]] == [False]
    embeddings = torch.randn(2, 1024)
    images = generate_from_embeddings(out, embeddings, seed=5)
    assert tuple(images[-1].shape) == (2, 3, 64, 64) and torch.isfinite(images[-1]).all()
    torch.testing.assert_close(generate_from_embeddings(out, embeddings, seed=5)[-1], images[-1])  # seeded
    disc = load_module(out / "discriminator0.safetensors")
    assert disc.resolution == 64 and not disc.has_uncond
    cond, uncond = disc.eval()(images[-1], torch.randn(2, 128))
    assert cond.shape == (2,) and uncond is None


def test_damsm_only_conversion_is_usable_by_training(tmp_path):
    text = write_reference(tmp_path / "text_encoder200.pth", "AttnGAN__bird__RNN_ENCODER", vocab_size=20)
    image = write_reference(tmp_path / "image_encoder200.pth", "AttnGAN__bird__CNN_ENCODER", old=True)
    captions = write_captions_pickle(tmp_path / "captions.pickle")
    out = convert_release(tmp_path / "damsm", text_encoder=text, image_encoder=image, captions=captions)
    assert sorted(p.name for p in out.iterdir()) == ["image_encoder.json", "image_encoder.safetensors",
                                                     "text_encoder.json", "text_encoder.safetensors"]
    encoder = load_image_encoder(out, embed_dim=256)
    assert encoder.align_corners and encoder.frozen_trunk  # the released encoders' resize
    regions, code = encoder(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert regions.shape == (1, 256, 17, 17) and code.shape == (1, 256)
    assert load_text_encoder(out).out_dim == 256
    # what tools/train.py model=attngan encoder.checkpoint=<out> does with it (GAN recipe)
    text_path, image_path = damsm_paths(compose("train", ["model=attngan", f"encoder.checkpoint={out}"]))
    vocab = Vocabulary.from_attngan_captions_pickle(captions)
    assert load_text_encoder(text_path, vocab=vocab).vocab_size == len(vocab) == 20
    assert image_path == out / "image_encoder.safetensors"


def _release_files(tmp_path):
    return (write_reference(tmp_path / "g.pth", "AttnGAN__bird_attn2__G_NET"),
            write_reference(tmp_path / "t.pth", "AttnGAN__bird__RNN_ENCODER", vocab_size=20),
            write_captions_pickle(tmp_path / "captions.pickle"))


def test_malformed_and_foreign_files_get_one_line(tmp_path):
    g, text, captions = _release_files(tmp_path)
    state = torch.load(g, weights_only=True)
    missing = dict(state)
    del missing["h_net2.att.conv_context.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing.pth looks like the reference AttnGAN G_NET but lacks h_net2.att.conv_context.weight"):
        convert_file(tmp_path / "missing.pth")
    torch.save({**state, "h_net2.extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"the reference AttnGAN G_NET but has 1 unexpected keys \(first: h_net2.extra.weight\)"):
        convert_file(tmp_path / "extra.pth")
    torch.save({**state, "h_net2.upsample.1.weight": torch.zeros(64, 64, 1, 1)}, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match="h_net2.upsample.1.weight has shape"):
        convert_file(tmp_path / "shape.pth")
    del missing["h_net3.residual.1.block.4.bias"]
    missing["h_net2.att.conv_context.weight"] = state["h_net2.att.conv_context.weight"]
    torch.save(missing, tmp_path / "missing2.pth")
    with pytest.raises(CheckpointError, match=r"AttnGAN G_NET but lacks 1 of its keys \(first: h_net3.residual.1.block.4.bias\)"):
        convert_file(tmp_path / "missing2.pth")
    torch.save({"conv.weight": torch.zeros(2, 2)}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="not a released AttnGAN / StackGAN"):
        convert_file(tmp_path / "foreign.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read .* as a PyTorch state dict"):
        convert_file(tmp_path / "text.pth")
    save_checkpoint(tmp_path / "ours.pt", "gan", {"state": {}})
    with pytest.raises(CheckpointError, match="is a t2i checkpoint"):
        convert_file(tmp_path / "ours.pt")
    with pytest.raises(CheckpointError, match="is a AttnGAN RNN_ENCODER \\(text encoder\\), but a generator"):
        convert_release(tmp_path / "x", generator=text, text_encoder=text, captions=captions)
    with pytest.raises(CheckpointError, match="needs its text encoder and vocabulary"):
        convert_release(tmp_path / "x", generator=g)
    big_vocab = write_reference(tmp_path / "t30.pth", "AttnGAN__bird__RNN_ENCODER", vocab_size=30)
    with pytest.raises(CheckpointError, match="has 30 words but the captions.pickle vocabulary has 20"):
        convert_release(tmp_path / "x", generator=g, text_encoder=big_vocab, captions=captions)
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*"))  # nothing half-written


def test_existing_export_is_kept_unless_overwrite(tmp_path):
    g, text, captions = _release_files(tmp_path)
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="already exists"):
        convert_release(out, generator=g, text_encoder=text, captions=captions)
    assert (out / "keep.txt").read_text() == "mine"
    convert_release(out, generator=g, text_encoder=text, captions=captions, overwrite=True)
    assert (out / "model.json").is_file() and not (out / "keep.txt").exists()

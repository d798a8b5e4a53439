"""t2i.export: the one export writer and reader; exports written before save_module still load; discovery."""

import json

import pytest
import torch
from safetensors.torch import save_file

from t2i.data.text import Vocabulary
from t2i.errors import CheckpointError
from t2i.export import DEFAULT_PRETRAINED, PRETRAINED_DIR, read_export, resolve_export, write_export
from t2i.models.aligndraw import AlignDRAW
from t2i.models.factory import build_from_spec, make_spec
from t2i.models.generator import MultiStageGenerator
from t2i.models.text_encoders import RNNTextEncoder
from t2i.pipeline import Text2ImagePipeline

VOCAB = Vocabulary(["bird", "green", "crown", "red", "wing"])


def _models():
    torch.manual_seed(0)
    text = RNNTextEncoder(len(VOCAB), word_dim=8, hidden_dim=4, dropout=0.0)
    gen = MultiStageGenerator(["init", "attention"], ngf=4, z_dim=6, c_dim=5, sent_dim=8, word_dim=8, res_blocks=1,
                              base_size=8)
    return gen, text


def _equal(a, b):
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_write_and_read_a_gan_export(tmp_path):
    gen, text = _models()
    out = write_export(tmp_path / "export", "gan", {"generator": gen, "text_encoder": text}, VOCAB.to_dict(),
                       {"name": "tiny", "z_dim": 6, "words_num": 18}, step=7, config={"seed": 1})
    names = {p.name for p in out.iterdir()}
    assert {"model.json", "vocab.json", "generator.safetensors", "generator.json", "text_encoder.safetensors",
            "text_encoder.json"} <= names and not any(n.endswith(".tmp") for n in names)
    export = read_export(out)
    assert export.kind == "gan" and export.step == 7 and export.z_dim == 6 and export.config == {"seed": 1}
    assert _equal(export.generator, gen) and _equal(export.text_encoder, text) and export.vocab.itos == VOCAB.itos
    pipe = Text2ImagePipeline.from_export(out)
    assert pipe(["green crown bird"], num_images=2, seed=0).images.shape == (2, 3, 16, 16)


def _previous_gan_export(folder, gen_spec, text_spec):
    """An export as GANTrainer.export wrote it before save_module: specs only in model.json."""
    folder.mkdir(parents=True)
    for name, spec in (("generator", gen_spec), ("text_encoder", text_spec)):
        torch.manual_seed(0)
        save_file({k: v.contiguous() for k, v in build_from_spec(spec).state_dict().items()},
                  folder / f"{name}.safetensors")
    meta = {"format": "t2i-export", "version": 1, "kind": "gan", "step": 3, "config": {},
            "model_spec": {"name": "tiny", "z_dim": 6, "words_num": 18, "generator": gen_spec,
                           "text_encoder": text_spec, "discriminators": []}}
    (folder / "model.json").write_text(json.dumps(meta, indent=1))
    (folder / "vocab.json").write_text(json.dumps(VOCAB.to_dict()))


def test_exports_of_the_previous_writer_still_load(tmp_path):
    gen_spec = make_spec("t2i.models.generator.MultiStageGenerator", stages=["init"], ngf=4, z_dim=6, c_dim=5,
                         sent_dim=8, word_dim=8, res_blocks=1, base_size=8)
    text_spec = make_spec("t2i.models.text_encoders.RNNTextEncoder", vocab_size=len(VOCAB), word_dim=8, hidden_dim=4)
    _previous_gan_export(tmp_path / "gan", gen_spec, text_spec)
    export = read_export(tmp_path / "gan")
    assert export.step == 3 and export.generator.resolutions == [8] and export.text_encoder.out_dim == 8
    # alignDRAW: one model, its own caption encoder
    spec = make_spec("t2i.models.aligndraw.AlignDRAW", vocab_size=len(VOCAB), height=8, width=8, channels=3, steps=2,
                     z_dim=4, enc_dim=8, dec_dim=8, read_n=2, write_n=2, word_dim=8, lang_dim=4, align_dim=8)
    folder = tmp_path / "aligndraw"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in build_from_spec(spec).state_dict().items()},
              folder / "generator.safetensors")
    meta = {"format": "t2i-export", "version": 1, "kind": "aligndraw", "step": 2, "config": {},
            "model_spec": {"name": "aligndraw", "generator": spec, "words_num": 18}}
    (folder / "model.json").write_text(json.dumps(meta))
    (folder / "vocab.json").write_text(json.dumps(VOCAB.to_dict()))
    export = read_export(folder)
    assert isinstance(export.generator, AlignDRAW) and export.text_encoder is None


def test_bad_exports_are_one_line_errors(tmp_path):
    gen, text = _models()
    out = write_export(tmp_path / "e", "gan", {"generator": gen, "text_encoder": text}, VOCAB.to_dict(),
                       {"name": "tiny", "z_dim": 6}, step=0)
    meta = json.loads((out / "model.json").read_text())
    (out / "model.json").write_text(json.dumps({**meta, "version": 2}))
    with pytest.raises(CheckpointError, match="version 2.*update t2i"):
        read_export(out)
    (out / "model.json").write_text(json.dumps(meta))
    (out / "text_encoder.safetensors").unlink()
    with pytest.raises(CheckpointError, match="text_encoder.safetensors is missing") as err:
        read_export(out)
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="not an exported t2i model"):
        read_export(tmp_path)
    with pytest.raises(ValueError, match="holds"):
        write_export(tmp_path / "x", "gan", {"generator": gen}, {}, {}, 0)


def test_resolve_export_finds_the_export_of_a_run(tmp_path):
    gen, text = _models()
    out = write_export(tmp_path / "runs" / "d" / "m" / "export", "gan", {"generator": gen, "text_encoder": text},
                       VOCAB.to_dict(), {"name": "tiny"}, step=0)
    assert resolve_export(tmp_path / "runs" / "d" / "m") == out and resolve_export(out) == out
    assert resolve_export(None, tmp_path / "runs") == out
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_export(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no exported model"):
        resolve_export(None, tmp_path / "empty", pretrained_dir=tmp_path / "no_pretrained")
    # without a run of one's own: the model shipped in the repository's pretrained/
    assert resolve_export(None, tmp_path / "empty") == PRETRAINED_DIR / DEFAULT_PRETRAINED


def test_the_shipped_model_is_whole_and_draws():
    """pretrained/synthbirds-attngan: every file matches model.json's sha256, and it generates in its vocabulary."""
    from t2i.pipeline import Text2ImagePipeline

    export = PRETRAINED_DIR / DEFAULT_PRETRAINED
    meta = read_export(export)
    assert meta.kind == "gan" and meta.model_spec["name"] == "attngan" and len(meta.vocab) == 53
    size = sum(p.stat().st_size for p in export.rglob("*") if p.is_file())
    assert size <= 25 * 2**20, size  # the budget for the shipped folder
    pipe = Text2ImagePipeline.from_export(export, device="cpu", precision="fp32")
    out = pipe(["this bird has a green crown, black wings and a yellow belly"], num_images=2, seed=0)
    assert out.images.shape[-1] == 64 and torch.isfinite(out.images).all()
    assert out.images.std() > 0.05  # a picture, not a flat field
    assert (export / "damsm" / "image_encoder.safetensors").is_file() and (export / "MODEL_CARD.md").is_file()


def _tiny_export(tmp_path, step=7):
    gen, text = _models()
    return write_export(tmp_path / "export", "gan", {"generator": gen, "text_encoder": text}, VOCAB.to_dict(),
                        {"name": "tiny", "z_dim": 6, "words_num": 18}, step=step)


def test_an_interrupted_export_is_found_not_mixed(tmp_path):
    """kill -9 between two files: a new generator beside the model.json of the previous export."""
    out = _tiny_export(tmp_path)
    meta = json.loads((out / "model.json").read_text())
    assert set(meta["files"]) == {"generator.safetensors", "generator.json", "text_encoder.safetensors",
                                  "text_encoder.json", "vocab.json"}
    gen, _ = _models()
    with torch.no_grad():
        next(gen.parameters()).add_(1.0)
    save_file({k: v.contiguous() for k, v in gen.state_dict().items()}, out / "generator.safetensors")
    with pytest.raises(CheckpointError, match="generator.safetensors does not match model.json"):
        read_export(out)
    (out / "generator.safetensors").unlink()
    with pytest.raises(CheckpointError, match="generator.safetensors is missing"):
        read_export(out)


def test_an_export_with_nan_weights_is_refused_on_load_and_on_save(tmp_path):
    out = _tiny_export(tmp_path)
    meta = json.loads((out / "model.json").read_text())
    state = {k: v.clone() for k, v in read_export(out).generator.state_dict().items()}
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key].fill_(float("nan"))
    save_file(state, out / "generator.safetensors")
    del meta["files"]  # an export written before the file list: the weights themselves are checked
    (out / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=f"generator weights .* hold NaN/inf \\(first: {key}\\)"):
        read_export(out)
    gen, text = _models()
    with torch.no_grad():
        next(gen.parameters()).fill_(float("inf"))
    with pytest.raises(CheckpointError, match="refusing to save generator.safetensors"):
        write_export(tmp_path / "bad", "gan", {"generator": gen, "text_encoder": text}, VOCAB.to_dict(),
                     {"name": "tiny", "z_dim": 6}, step=1)


def test_an_export_too_large_for_memory_is_refused_before_allocating(tmp_path, monkeypatch):
    import t2i.models.factory as factory

    out = _tiny_export(tmp_path)
    meta = json.loads((out / "model.json").read_text())
    meta["model_spec"]["generator"]["kwargs"]["ngf"] = 4096  # about 40 GiB of weights
    del meta["files"]
    (out / "model.json").write_text(json.dumps(meta))
    spec = json.loads((out / "generator.json").read_text())
    spec["spec"] = meta["model_spec"]["generator"]
    (out / "generator.json").write_text(json.dumps(spec))
    monkeypatch.setattr(factory, "available_memory", lambda: 8 * 2**30)
    with pytest.raises(CheckpointError, match=r"needs \d+\.\d GiB for its weights, more than the 8\.0 GiB available"):
        read_export(out)


def test_without_a_run_the_shipped_model_is_used(tmp_path):
    from t2i.export import newest_export

    runs, pre = tmp_path / "runs", tmp_path / "pretrained"
    runs.mkdir()
    with pytest.raises(CheckpointError, match="no exported model under"):
        newest_export(runs, pretrained_dir=pre)
    for name in ("another-model", "synthbirds-attngan"):
        (pre / name).mkdir(parents=True)
        (pre / name / "model.json").write_text("{}")
    assert newest_export(runs, pretrained_dir=pre) == pre / "synthbirds-attngan"  # the default first
    assert resolve_export(None, runs, pretrained_dir=pre) == pre / "synthbirds-attngan"
    mine = _tiny_export(runs / "synthbirds" / "attngan")
    assert newest_export(runs, pretrained_dir=pre) == mine  # a run of your own wins

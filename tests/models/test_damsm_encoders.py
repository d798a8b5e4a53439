"""DAMSM encoder files (t2i.models.damsm): round trip, the checks on loading, and files of the previous format."""

import pytest
import torch

from t2i.errors import CheckpointError
from t2i.io import save_checkpoint
from t2i.models.damsm import (find_encoder, load_image_encoder, load_text_encoder, save_image_encoder,
                              save_text_encoder, text_encoder_vocab)
from t2i.models.image_encoders import LightImageEncoder
from t2i.models.text_encoders import RNNTextEncoder

VOCAB = 12


class ToyVocab:
    def __init__(self, n=VOCAB):
        self.itos = ["<end>"] + [f"w{i}" for i in range(1, n)]

    def __len__(self):
        return len(self.itos)

    def to_dict(self):
        return {"format": "t2i-vocab", "itos": list(self.itos)}


def _models():
    torch.manual_seed(0)
    return RNNTextEncoder(VOCAB, word_dim=8, hidden_dim=8), LightImageEncoder(embed_dim=16, width=4, image_size=16)


def _same(a, b):
    return a.state_dict().keys() == b.state_dict().keys() and all(
        torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_round_trip_in_a_run_directory(tmp_path):
    text, image = _models()
    assert save_text_encoder(tmp_path, text, ToyVocab()) == tmp_path / "text_encoder.safetensors"
    save_image_encoder(tmp_path, image)
    loaded = load_text_encoder(tmp_path, vocab=ToyVocab())
    assert isinstance(loaded, RNNTextEncoder) and _same(loaded, text) and not loaded.training
    assert _same(load_image_encoder(tmp_path / "image_encoder.json", embed_dim=16), image)
    assert text_encoder_vocab(tmp_path)["itos"] == ToyVocab().itos


def test_load_checks(tmp_path):
    text, image = _models()
    save_text_encoder(tmp_path / "t.safetensors", text, ToyVocab())
    with pytest.raises(CheckpointError, match="vocabulary of 12 tokens but the data has 13") as err:
        load_text_encoder(tmp_path / "t.safetensors", vocab=ToyVocab(13))
    assert "\n" not in str(err.value)
    other = ToyVocab()
    other.itos[3] = "zzz"
    with pytest.raises(CheckpointError, match="other words"):
        load_text_encoder(tmp_path / "t.safetensors", vocab=other)
    save_image_encoder(tmp_path / "i.safetensors", image)
    with pytest.raises(CheckpointError, match="embedding size 16 but 32"):
        load_image_encoder(tmp_path / "i.safetensors", embed_dim=32)
    with pytest.raises(CheckpointError, match="damsm_text"):
        load_text_encoder(tmp_path / "i.safetensors")  # an image encoder is not a text encoder
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "raw.pth")
    with pytest.raises(CheckpointError, match="not a t2i checkpoint"):
        load_text_encoder(tmp_path / "raw.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no DAMSM text encoder in .*model=damsm"):
        load_text_encoder(tmp_path / "empty")
    assert find_encoder(tmp_path / "t.json", "text_encoder") == tmp_path / "t.safetensors"


def _write_previous_format(folder, text, image, vocab):
    """The files DAMSM training wrote before save_module (t2i checkpoints with class, kwargs, state dict)."""
    save_checkpoint(folder / "text_encoder.pt", "damsm_text", {
        "class": "RNNTextEncoder", "kwargs": dict(vocab_size=VOCAB, word_dim=8, hidden_dim=8, num_layers=1,
                                                  bidirectional=True, dropout=0.5, rnn_type="lstm"),
        "state_dict": text.state_dict(), "vocab": vocab.to_dict(), "config": {}})
    save_checkpoint(folder / "image_encoder.pt", "damsm_image", {
        "class": "LightImageEncoder", "kwargs": dict(embed_dim=16, width=4, image_size=16),
        "state_dict": image.state_dict(), "config": {}})


def test_files_of_the_previous_format_still_load(tmp_path):
    text, image = _models()
    _write_previous_format(tmp_path, text, image, ToyVocab())
    assert _same(load_text_encoder(tmp_path, vocab=ToyVocab()), text)
    assert _same(load_image_encoder(tmp_path / "image_encoder.pt", embed_dim=16), image)
    assert text_encoder_vocab(tmp_path / "text_encoder.pt")["itos"] == ToyVocab().itos
    with pytest.raises(CheckpointError, match="vocabulary of 12 tokens but the data has 13"):
        load_text_encoder(tmp_path, vocab=ToyVocab(13))


def test_previous_format_naming_a_foreign_class_is_refused(tmp_path):
    save_checkpoint(tmp_path / "text_encoder.pt", "damsm_text", {
        "class": "Popen", "kwargs": {"args": ["true"]}, "state_dict": {}, "vocab": None})
    with pytest.raises(CheckpointError, match="not a DAMSM text_encoder export"):
        load_text_encoder(tmp_path)

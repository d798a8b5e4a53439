"""Attribute supervision of the DAMSM space: labels, the heads' loss, the trainer and the recipe."""

import pytest
import torch
import torch.nn.functional as F

from t2i.errors import CheckpointError, ConfigError
from t2i.structures import Batch, Record
from t2i.training.attribute_heads import (AttributeHeads, AttributeLabels, build_attribute_supervision,
                                          dataset_colour_schema)

SCHEMA = {"crown": ["black", "green", "red"], "wing": ["blue", "yellow"]}


def _record(key, attributes):
    return Record(key=key, image_path=f"{key}.png", captions=["a bird"], class_id=0, attributes=attributes)


def test_labels_of_images_and_captions():
    records = [_record("a", {"crown": "green", "wing": "yellow"}), _record("b", {"crown": "red"}),
               _record("c", None)]
    labels = AttributeLabels(records, SCHEMA)
    assert labels.images(["a", "b", "c", "unknown"]).tolist() == [[1, 1], [2, -1], [-1, -1], [-1, -1]]
    texts = ["this bird has a red crown and blue wings", "a bird with yellow wings", "a small bird"]
    assert labels.captions(texts).tolist() == [[2, 0], [-1, 1], [-1, -1]]
    assert labels.captions([]).shape == (0, 2)


def test_labels_of_swapped_images_pass_through_the_swap():
    records = [_record("a", {"crown": "green", "wing": "yellow"}), _record("b", {"crown": "red"})]
    labels = AttributeLabels(records, SCHEMA)
    swap = {"green": "black", "yellow": "blue", "red": "white"}  # white: outside the crown's schema
    assert labels.images(["a", "b"], [swap, None]).tolist() == [[0, 0], [2, -1]]
    assert labels.images(["a", "b"], [None, swap]).tolist() == [[1, 1], [-1, -1]]
    assert labels.images(["a", "b"], []).tolist() == labels.images(["a", "b"]).tolist() == [[1, 1], [2, -1]]
    with pytest.raises(ValueError, match="1 recolourings for 2 images"):
        labels.images(["a", "b"], [swap])
    heads, wide = build_attribute_supervision(records * 2 + [_record("c", {"crown": "green", "wing": "blue"})], 4, 1.0,
                                              colours=["white", "green"])
    assert wide.schema == {"crown": ["green", "red", "white"], "wing": ["blue", "green", "white", "yellow"]}
    assert heads.heads["wing"].out_features == 4
    assert wide.images(["b"], [swap]).tolist() == [[2, -1]]


def test_schema_from_records_keeps_colour_parts_with_two_values():
    records = [_record("a", {"crown": "green", "wing": "blue", "size": "small"}),
               _record("b", {"crown": "red", "wing": "blue"})]
    assert dataset_colour_schema(records) == {"crown": ["green", "red"]}
    assert dataset_colour_schema([_record("c", None)]) == {}


def test_loss_is_the_mean_cross_entropy_over_labelled_parts():
    torch.manual_seed(0)
    heads = AttributeHeads(SCHEMA, dim=4, scale=3.0)
    vectors = torch.randn(3, 4)
    labels = torch.tensor([[1, -1], [2, -1], [-1, -1]])  # no wing label at all: that part is left out
    logits = heads.logits(vectors)
    expected = F.cross_entropy(logits["crown"][:2], labels[:2, 0])
    assert torch.allclose(heads.loss(vectors, labels), expected)
    # unit-normalised inputs: the scale of a vector does not matter
    assert torch.allclose(heads.loss(vectors * 7.0, labels), expected, atol=1e-6)
    nothing = heads.loss(vectors.requires_grad_(), torch.full((3, 2), -1))
    assert nothing.item() == 0.0 and nothing.requires_grad
    both = torch.tensor([[1, 0], [2, 1], [-1, -1]])
    wing = F.cross_entropy(logits["wing"][:2], both[:2, 1])
    assert torch.allclose(heads.loss(vectors, both), (expected + wing) / 2)
    right = sum(int(logits[p][i].argmax() == both[i, j]) for j, p in enumerate(SCHEMA) for i in range(2))
    assert heads.accuracy(vectors, both) == pytest.approx(right / 4)
    assert heads.accuracy(vectors, torch.full((3, 2), -1)) is None


def test_no_attributes_is_a_config_error():
    with pytest.raises(ConfigError, match="model.attribute_weight=0"):
        build_attribute_supervision([_record("a", None)], dim=4, weight=1.0)


# ---------------------------------------------------------------------------------------------- trainer
class _Vocab:
    itos = ["<end>", "a", "bird", "with", "red", "green", "crown"]

    def __len__(self):
        return len(self.itos)

    def to_dict(self):
        return {"format": "t2i-vocab", "itos": list(self.itos)}


def _batches(n, b=8, seed=0):
    """Images whose top half is red or green (the crown); captions name it in half of the batches."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        colour = torch.randint(0, 2, (b,), generator=g)
        images = 0.2 * torch.randn(b, 3, 16, 16, generator=g)
        images[:, 0, :8] += torch.where(colour == 0, 0.8, -0.8)[:, None, None]
        images[:, 1, :8] -= torch.where(colour == 0, 0.8, -0.8)[:, None, None]
        words = [["a", "bird", "with", ["red", "green"][c], "crown"] for c in colour.tolist()]
        ids = torch.tensor([[_Vocab.itos.index(w) for w in ws] for ws in words])
        keys = [f"{i}_{k}_{c}" for k, c in enumerate(colour.tolist())]
        out.append(Batch(images=[images.clamp(-1, 1)], captions=ids, lengths=torch.full((b,), 5),
                         class_ids=colour, keys=keys, caption_texts=[" ".join(ws) for ws in words]))
    return out


def _supervision(batches):
    records = [_record(k, {"crown": ["red", "green"][int(k.rsplit("_", 1)[1])]}) for b in batches for k in b.keys]
    return build_attribute_supervision(records, dim=16, weight=1.0)


def _trainer(tmp_path, train, test, attributes, weight, **kw):
    from t2i.models.image_encoders import LightImageEncoder
    from t2i.models.text_encoders import RNNTextEncoder
    from t2i.training.damsm import DAMSMTrainer

    torch.manual_seed(0)
    text = RNNTextEncoder(len(_Vocab.itos), word_dim=8, hidden_dim=8, dropout=0.0)
    image = LightImageEncoder(embed_dim=16, width=4, image_size=16)
    return DAMSMTrainer(text, image, train, test, tmp_path, lr=0.01, device="cpu", progress=False, vocab=_Vocab(),
                        folds=2, log_every=1, ckpt_every=1000, attributes=attributes, attribute_weight=weight, **kw)


def test_trainer_learns_the_heads_and_resumes_only_alike(tmp_path):
    torch.set_num_threads(1)
    train, test = _batches(4), _batches(2, seed=1)
    sup = _supervision(train + test)
    trainer = _trainer(tmp_path / "run", train, test, sup, 1.0, epochs=8)
    first = trainer.train_step(train[0])
    plain = trainer.compute_loss(train[0])  # evaluation: the DAMSM loss alone
    assert "loss/attributes" in first and trainer.last_attribute_loss is None and plain.loss.item() > 0
    metrics = trainer.fit()
    # the heads read the crown colour of unseen images from both vectors
    assert metrics["test/attribute_acc_image"] >= 0.9 and metrics["test/attribute_acc_sentence"] >= 0.9
    from t2i.io import load_checkpoint

    data = load_checkpoint(tmp_path / "run" / "checkpoint.pt", "damsm_train", "cpu")
    assert set(data["attribute_heads"]) == {"heads.crown.weight", "heads.crown.bias"}
    # the exported encoders are plain DAMSM encoders
    from t2i.models.damsm import load_image_encoder

    assert type(load_image_encoder(tmp_path / "run")).__name__ == "LightImageEncoder"
    # resuming with another setting is one clear error, both ways
    with pytest.raises(CheckpointError, match="attribute_weight"):
        _trainer(tmp_path / "run", train, test, None, 0.0, epochs=9).fit()
    _trainer(tmp_path / "plain", train, test, None, 0.0, epochs=1).fit()
    with pytest.raises(CheckpointError, match="attribute_weight"):
        _trainer(tmp_path / "plain", train, test, _supervision(train + test), 1.0, epochs=2).fit()


def test_weight_zero_heads_change_nothing(tmp_path):
    train = _batches(1)
    with_heads = _trainer(tmp_path / "a", train, None, _supervision(train), 0.0, epochs=1)
    without = _trainer(tmp_path / "b", train, None, None, 0.0, epochs=1)
    a, b = with_heads.train_step(train[0]), without.train_step(train[0])
    assert a["loss/total"] == pytest.approx(b["loss/total"]) and "loss/attributes" not in a


def test_recipe_trains_with_attribute_weight(tmp_path):
    from t2i.config import compose
    from t2i.recipes.damsm import train

    cfg = compose("train", [
        "model=damsm", f"data.root={tmp_path / 'synth'}", f"run_dir={tmp_path / 'run'}",
        "data.render={num_species: 8, images_per_species: 5, image_size: 32, seed: 0}",
        "model.image_size=32", "model.image_encoders.light.width=4", "encoder.word_dim=8", "encoder.hidden_dim=8",
        "train.batch_size=6", "train.max_steps=2", "train.precision=fp32", "device=cpu", "model.attribute_weight=2"])
    metrics = train(cfg)
    assert 0.0 <= metrics["test/attribute_acc_image"] <= 1.0 and 0.0 <= metrics["test/attribute_acc_sentence"] <= 1.0

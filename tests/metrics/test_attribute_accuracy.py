"""Attribute classifier, caption parsing and the attribute accuracy."""

import numpy as np
import pytest
import torch

from t2i.data.attributes import COLOURS, PARTS, parse_caption_attributes
from t2i.data.synthbirds import draw_bird, make_captions, make_species, sample_bird
from t2i.errors import CheckpointError, DataError
from t2i.metrics.attribute_accuracy import (AttributeClassifier, attribute_accuracy, load_attribute_classifier,
                                            named_to_labels, save_attribute_classifier, train_attribute_classifier)

SCHEMA = {part: list(COLOURS) for part in PARTS}


@pytest.mark.parametrize("caption, expected", [
    ("this bird has a green crown, black wings and a white belly", {"crown": "green", "wing": "black", "belly": "white"}),
    ("green crown bird", {"crown": "green"}),
    ("a small red breasted bird", {"breast": "red"}),
    ("this bird is yellow with a gray chest and a short orange bill", {"body": "yellow", "breast": "grey", "beak": "orange"}),
    ("a blue bird with brown tail feathers", {"body": "blue", "tail": "brown"}),
    ("a bird that is mostly purple with a red abdomen", {"body": "purple", "belly": "red"}),
    ("a bird with a pointy beak", {}),
])
def test_parse_caption_attributes(caption, expected):
    assert parse_caption_attributes(caption, SCHEMA) == expected


def test_parser_agrees_with_the_renderer_on_its_captions():
    rng = np.random.default_rng(0)
    species = make_species(6, seed=0)
    for s in species:
        bird = sample_bird(s, rng)
        for caption in make_captions(bird, rng, count=10):
            named = parse_caption_attributes(caption, SCHEMA)
            assert named, caption
            assert all(s.colours[part] == value for part, value in named.items()), caption


def test_attribute_accuracy_by_hand():
    schema = {"crown": ["red", "green"], "wing": ["red", "green", "blue"]}
    pred = {"crown": torch.tensor([0, 1, 1]), "wing": torch.tensor([2, 2, 0])}
    named = [{"crown": "red", "wing": "blue"},   # 2 / 2
             {"crown": "red", "wing": "blue"},   # 1 / 2
             {"wing": 1, "tail": "red"}]         # 0 / 1 (tail is not in the schema)
    assert attribute_accuracy(pred, named, schema) == pytest.approx((1 + 0.5 + 0) / 3)
    pred4 = {k: torch.cat([v, torch.zeros(1, dtype=torch.long)]) for k, v in pred.items()}
    assert attribute_accuracy(pred4, named + [{}], schema) == pytest.approx((1 + 0.5 + 0) / 3)  # nothing named: left out
    labels = named_to_labels(named, schema)
    assert labels.tolist() == [[0, 2], [0, 2], [-1, 1]]
    with pytest.raises(DataError, match="no caption names"):
        attribute_accuracy(pred, [{}, {}, {}], schema)
    with pytest.raises(DataError, match="3 captions"):
        attribute_accuracy({"crown": torch.zeros(2)}, named, schema)


def test_classifier_learns_colour_patches_and_roundtrips(tmp_path):
    torch.manual_seed(0)
    schema = {"top": ["red", "green"], "bottom": ["red", "green", "blue"]}
    palette = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    labels = torch.stack([torch.randint(0, 2, (64,)), torch.randint(0, 3, (64,))], 1)
    images = torch.zeros(64, 3, 16, 16)
    images[:, :, :8] = palette[labels[:, 0]][:, :, None, None]
    images[:, :, 8:] = palette[labels[:, 1]][:, :, None, None]
    labels[::4, 1] = -1  # unknown labels are ignored by the loss
    classifier = AttributeClassifier(schema, width=8, image_size=16)
    batches = [(images[i:i + 16], labels[i:i + 16]) for i in range(0, 64, 16)]
    losses = train_attribute_classifier(classifier, batches, steps=30, lr=1e-2)
    assert len(losses) == 30 and losses[-1] < 0.3 * losses[0]
    pred = classifier.predict(images)
    assert set(pred) == {"top", "bottom"} and pred["top"].shape == (64,)
    assert (pred["top"] == labels[:, 0]).float().mean() > 0.9
    path = tmp_path / "attr.pt"
    save_attribute_classifier(path, classifier)
    loaded = load_attribute_classifier(path)
    assert loaded.schema == schema and not loaded.training
    assert all(torch.equal(pred[k], v) for k, v in loaded.predict(images).items())
    assert loaded(torch.zeros(2, 3, 40, 40))["bottom"].shape == (2, 3)  # other sizes are resized
    with pytest.raises(CheckpointError):
        load_attribute_classifier(tmp_path / "missing.pt")


def test_classifier_validates_its_arguments():
    with pytest.raises(ValueError, match="power of two"):
        AttributeClassifier({"crown": ["a", "b"]}, image_size=48)
    with pytest.raises(ValueError, match="two or more values"):
        AttributeClassifier({"crown": ["a"]})


def test_drawn_bird_labels_are_learnable_interface():
    # real renders go through the same interface: uint8 PIL -> [-1, 1] tensors, labels by schema index
    rng = np.random.default_rng(1)
    species = make_species(3, seed=0)
    birds = [sample_bird(s, rng) for s in species]
    images = torch.stack([torch.from_numpy(np.array(draw_bird(b, 32)[0].convert("RGB"))).permute(2, 0, 1) for b in birds])
    images = images.float() / 127.5 - 1
    labels = named_to_labels([b.species.colours for b in birds], SCHEMA)
    assert labels.shape == (3, len(PARTS)) and (labels >= 0).all()
    logits = AttributeClassifier(SCHEMA, width=4, image_size=32)(images)
    assert {p: v.shape for p, v in logits.items()} == {p: (3, len(COLOURS)) for p in PARTS}

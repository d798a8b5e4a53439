"""Palette swaps of the synthetic birds (t2i/data/synthbirds/recolour.py) and their wiring into the datasets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from t2i.data import synthbirds as sb
from t2i.data.cub import CUBSource
from t2i.data.dataset import TextImageDataset
from t2i.data.images import crop_box, load_image
from t2i.data.text import tokenize
from t2i.errors import ConfigError, DataError
from t2i.recipes.data import build_datasets, build_recolour, recolour_probability

SETTINGS = dict(num_species=4, images_per_species=3, image_size=96, seed=5)
REPO = Path(__file__).resolve().parents[2]
_PALETTE = list(sb.COLOURS)
ROTATE = {c: _PALETTE[(i + 1) % len(_PALETTE)] for i, c in enumerate(_PALETTE)}  # no colour is left as it is
IDENTITY = {c: c for c in sb.COLOURS}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sb.render_dataset(tmp_path_factory.mktemp("birds") / "r", **SETTINGS, workers=1, progress=False)


@pytest.fixture(scope="module")
def records(rendered: Path):
    source = CUBSource(rendered)
    return source, source.records("train") + source.records("test")


class FixedSwap(sb.PaletteSwap):
    """Always the same mapping and no draw from the generator, so a dataset's other random choices stay put."""

    def __init__(self, root, mapping):
        super().__init__(root, 1.0)
        self.mapping = mapping

    def sample(self, generator=None):
        return self.mapping


def _core_means(image: np.ndarray, part_map: np.ndarray) -> dict[int, np.ndarray]:
    """Mean colour of each part label over pixels whose 4-neighbours are the same part (no antialiased edges)."""
    means = {}
    for label in np.unique(part_map):
        inside = part_map == label
        core = inside.copy()
        core[1:-1, 1:-1] &= inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:]
        if label and core.sum() >= 6:
            means[int(label)] = image[core].mean(0)
    return means


def test_identity_redraw_is_the_stored_image(rendered, records):
    swap = sb.PaletteSwap(rendered, 1.0)
    assert swap.render_size == SETTINGS["image_size"]
    _, recs = records
    diffs, others = [], []
    for i, record in enumerate(recs):
        stored = np.asarray(load_image(record.image_path, record.bbox), dtype=np.float64)
        redrawn = np.asarray(swap.image(record.key, IDENTITY), dtype=np.float64)
        assert redrawn.shape == stored.shape
        diffs.append(np.abs(redrawn - stored).mean())  # JPEG quantisation only
        other = np.asarray(swap.image(recs[(i + 1) % len(recs)].key, IDENTITY).resize(stored.shape[1::-1]), np.float64)
        others.append(np.abs(other - stored).mean())
    assert max(diffs) < 3.0, diffs
    assert min(others) > 10.0, others  # the redraw is of this bird, not of any bird


def test_identity_redraw_of_a_diagnostic_render_keeps_its_fixed_variation_and_blur(tmp_path):
    root = sb.render_dataset(tmp_path / "d", **SETTINGS, fixed=["pose", "background"], blur=1.5, workers=1,
                             progress=False)
    swap = sb.PaletteSwap(root, 1.0)
    diffs = [np.abs(np.asarray(swap.image(r.key, IDENTITY), np.float64)
                    - np.asarray(load_image(r.image_path, r.bbox), np.float64)).mean()
             for r in CUBSource(root).records("train")]
    assert max(diffs) < 3.0, diffs  # drawn in the stored pose, on the stored background, blurred alike


def test_swapped_parts_wear_the_mapped_colours(rendered, records):
    swap = sb.PaletteSwap(rendered, 1.0)
    _, recs = records
    checked = 0
    for record in recs[::2]:
        bird = swap.bird(record.key)
        _, part_map, bbox = sb.draw_bird(bird, swap.render_size)
        left, top, right, bottom = crop_box(part_map.shape[1], part_map.shape[0], bbox)
        part_map = part_map[top:bottom, left:right]
        image = np.asarray(swap.image(record.key, ROTATE), dtype=np.float64)
        for label, mean in _core_means(image, part_map).items():
            part = next(p for p, v in sb.PART_LABELS.items() if v == label)
            want = ROTATE[bird.species.colours[part]]
            nearest = min(sb.COLOURS, key=lambda c: np.sum((np.asarray(sb.COLOURS[c]) - mean) ** 2))
            assert nearest == want, (record.key, part, nearest, want)
            checked += 1
    assert checked >= 30


def test_caption_words_and_articles_follow_the_mapping():
    mapping = {**IDENTITY, "red": "orange", "orange": "red", "grey": "yellow", "yellow": "grey"}
    text = sb.PaletteSwap.text
    assert text("A red bird with an orange chest, gray wings and a Yellow crown", mapping) == \
        "An orange bird with a red chest, yellow wings and a grey crown"
    assert text("reddish feathers, a greenish crown", mapping) == "reddish feathers, a greenish crown"
    assert text("this bird has a gray belly", IDENTITY) == "this bird has a gray belly"  # unchanged spelling
    caption = "the bird has a black crown, white wings and a blue breast"
    swapped = text(caption, ROTATE)
    old = [w for w in tokenize(caption) if w in sb.COLOUR_WORDS]
    new = [w for w in tokenize(swapped) if w in sb.COLOUR_WORDS]
    assert new == [ROTATE[w] for w in old] and len(new) == 3
    assert re.sub("|".join(sb.COLOURS), "C", swapped.replace("an ", "a ")) == re.sub("|".join(sb.COLOURS), "C", caption)


def test_sample_is_a_seeded_permutation_at_the_given_rate(rendered):
    assert sb.PaletteSwap(rendered, 0.0).sample(torch.Generator().manual_seed(0)) is None
    swap = sb.PaletteSwap(rendered, 0.5)
    draws = [swap.sample(torch.Generator().manual_seed(s)) for s in range(300)]
    swapped = [d for d in draws if d is not None]
    assert 0.4 < len(swapped) / len(draws) < 0.6
    assert all(sorted(d) == sorted(sb.COLOURS) and sorted(d.values()) == sorted(sb.COLOURS) for d in swapped)
    assert len({tuple(d.values()) for d in swapped}) > 0.95 * len(swapped)
    assert swap.sample(torch.Generator().manual_seed(7)) == swap.sample(torch.Generator().manual_seed(7))
    with pytest.raises(ValueError, match="probability"):
        sb.PaletteSwap(rendered, 1.5)


def test_other_render_and_foreign_keys_are_refused(rendered, tmp_path):
    swap = sb.PaletteSwap(rendered, 1.0)
    with pytest.raises(DataError, match="not an image of this"):
        swap.bird("999.Nobody/Nobody_0001")
    with pytest.raises(DataError, match="not an image of this"):
        swap.bird(next(iter(swap.species)) + "/broken")
    with pytest.raises(DataError):
        sb.PaletteSwap(tmp_path / "nothing", 1.0)
    copy = tmp_path / "copy"
    copy.mkdir()
    summary = json.loads((rendered / "synthbirds.json").read_text())
    first = next(iter(summary["species"].values()))
    first["colours"]["crown"] = "pink" if first["colours"]["crown"] != "pink" else "red"
    (copy / "synthbirds.json").write_text(json.dumps(summary))
    with pytest.raises(DataError, match="render it again"):
        sb.PaletteSwap(copy, 1.0)


def test_dataset_swaps_image_caption_and_wrong_caption_together(rendered, records):
    source, _ = records
    vocab = source.vocabulary()
    common = dict(base_size=16, num_stages=2, train=True)
    plain = TextImageDataset(source.records("train"), vocab, **common)
    same = TextImageDataset(source.records("train"), vocab, recolour=FixedSwap(rendered, IDENTITY), **common)
    known = [c for c in sb.COLOURS if c in vocab]  # this tiny render's captions name only some colours
    rotate = {**IDENTITY, **{c: known[(i + 1) % len(known)] for i, c in enumerate(known)}}
    rotated = TextImageDataset(source.records("train"), vocab, recolour=FixedSwap(rendered, rotate), **common)
    for index in range(len(plain)):
        torch.manual_seed(index)  # the training caption choice uses the global generator
        a = plain[index]
        torch.manual_seed(index)
        b = same[index]
        torch.manual_seed(index)
        c = rotated[index]
        assert a["caption_text"] == b["caption_text"] and torch.equal(a["caption"], b["caption"])
        assert torch.equal(a["wrong_caption"], b["wrong_caption"]) and a["wrong_key"] == c["wrong_key"]
        for x, y in zip(a["images"], b["images"]):  # the same random crop and flip of the same bird
            assert (x - y).abs().mean() < 0.03
        assert c["caption_text"] == sb.PaletteSwap.text(a["caption_text"], rotate) != a["caption_text"]
        assert vocab.decode(c["caption"].tolist()) == tokenize(c["caption_text"])
        wrong = " ".join(vocab.decode(a["wrong_caption"].tolist()))
        assert c["wrong_caption"].tolist() == vocab.encode_text(sb.PaletteSwap.text(wrong, rotate))
        assert (c["images"][-1] - a["images"][-1]).abs().mean() > 0.05


def test_test_split_is_never_swapped(rendered, records):
    source, _ = records
    test = TextImageDataset(source.records("test"), source.vocabulary(), base_size=16, num_stages=1, train=False,
                            recolour=FixedSwap(rendered, ROTATE))
    assert test.recolour is None
    assert test[0]["caption_text"] == source.records("test")[0].captions[0]


def _data_cfg(root: Path, **over):
    cfg = OmegaConf.load(REPO / "conf/data/synthbirds.yaml")
    cfg.root = str(root)
    cfg.render = {**SETTINGS, "workers": 1, "progress": False}
    for key, value in over.items():
        cfg[key] = value
    return cfg


def test_config_value_checked_before_any_render(tmp_path):
    for bad in (1.5, -0.1, "often"):
        with pytest.raises(ConfigError, match=r"data.recolour=.* must be a probability"):
            build_datasets(_data_cfg(tmp_path / "never", recolour=bad), base_size=16, num_stages=1)
    assert not (tmp_path / "never").exists()
    cub = OmegaConf.create({"name": "cub", "root": str(tmp_path), "recolour": 0.5})
    with pytest.raises(ConfigError, match="need data=synthbirds"):
        recolour_probability(cub)
    assert recolour_probability(OmegaConf.create({"name": "cub"})) == 0.0
    assert build_recolour(OmegaConf.merge(cub, {"recolour": 0}), 64) is None


def test_build_datasets_swaps_training_images_only(rendered):
    train, test, _ = build_datasets(_data_cfg(rendered, recolour=1.0), base_size=16, num_stages=2)
    assert isinstance(train.recolour, sb.PaletteSwap) and train.recolour.render_size == 64  # 2 x 32 px
    assert test.recolour is None
    known = [c for c in sb.COLOURS if c in train.vocab]
    assert list(train.recolour.colours) == known and len(known) < len(sb.COLOURS)
    for seed in range(20):  # a swap never writes a colour word the vocabulary would drop
        mapping = train.recolour.sample(torch.Generator().manual_seed(seed))
        assert sorted(mapping[c] for c in known) == sorted(known)
        assert all(mapping[c] == c for c in sb.COLOURS if c not in known)
    colour = re.compile(r"\b(an?\s+)?(" + "|".join(sb.COLOUR_WORDS) + r")\b")
    changed = 0
    for index in range(len(train)):
        item = train[index]
        captions = train.records[item["index"]].captions
        assert [x.shape[-1] for x in item["images"]] == [16, 32]
        assert colour.sub("C", item["caption_text"]) in [colour.sub("C", c) for c in captions]  # words kept
        changed += item["caption_text"] not in captions
    assert changed >= len(train) - 1


def test_train_tool_one_line_for_a_bad_value(tmp_path):
    proc = subprocess.run([sys.executable, "tools/train.py", "model=damsm", "data.recolour=2",
                           f"data.root={tmp_path / 'birds'}", f"run_dir={tmp_path / 'run'}"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "data.recolour=2 must be a probability" in lines[0], \
        proc.stderr[-2000:]
    assert not (tmp_path / "birds").exists() and not (tmp_path / "run" / "checkpoint.pt").exists()


def _damsm_cfg(rendered, tmp_path, *overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        return compose("train", overrides=[*overrides, f"data.root={rendered}", "data.recolour=0.5",
                                           "model.batch_size=4", f"run_dir={tmp_path / 'run'}",
                                           *(f"data.render.{k}={v}" for k, v in SETTINGS.items())])


def test_damsm_refuses_swaps_with_cached_features_of_the_stored_images(rendered, tmp_path):
    from t2i.recipes import damsm

    cfg = _damsm_cfg(rendered, tmp_path, "model=damsm_inception", "model.image_size=32")
    with pytest.raises(ConfigError, match="model.cache_trunk_features=false"):
        damsm.train(cfg)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_part_colour_labels_follow_the_swap_of_each_example(rendered):
    from t2i.data.dataset import collate
    from t2i.training.attribute_heads import build_attribute_supervision

    train, test, _ = build_datasets(_data_cfg(rendered, recolour=0.5), base_size=16, num_stages=1)
    heads, labels = build_attribute_supervision(list(train.records) + list(test.records), 8, 1.0,
                                                colours=train.recolour.colours)
    assert all(set(train.recolour.colours) <= set(values) for values in labels.schema.values())
    batch = collate([train[i] for i in range(len(train))], wrong_captions=False)
    swapped = [m is not None for m in batch.recolourings]
    assert 0 < sum(swapped) < len(batch)  # probability 0.5: both kinds in the batch
    image_rows, caption_rows = labels.images(batch.keys, batch.recolourings), labels.captions(batch.caption_texts)
    stored_rows = labels.images(batch.keys)
    named = caption_rows >= 0
    assert named.sum() >= len(batch)  # every caption names a part colour or more
    # the caption was swapped with the image: every part colour it names is the redrawn bird's
    assert torch.equal(image_rows[named], caption_rows[named])
    for b, key in enumerate(batch.keys):
        bird = train.recolour.bird(key)
        mapping = batch.recolourings[b] or IDENTITY
        parts = labels.parts
        expected = [labels.schema[p].index(mapping[bird.species.colours[p]]) if p in bird.species.colours else -1
                    for p in parts]
        assert image_rows[b].tolist() == expected
        assert torch.equal(image_rows[b], stored_rows[b]) == (not swapped[b] or all(
            mapping[c] == c for c in bird.species.colours.values()))
    assert collate([test[0], test[1]], wrong_captions=False).recolourings == []


def test_damsm_trains_part_colour_heads_on_swapped_images(rendered, tmp_path):
    from t2i.recipes import damsm

    cfg = _damsm_cfg(rendered, tmp_path, "model=damsm", "model.attribute_weight=1.0", "model.image_size=32",
                     "model.image_encoders.light.width=4", "encoder.word_dim=8", "encoder.hidden_dim=8",
                     "train.max_steps=2", "train.precision=fp32", "device=cpu")
    metrics = damsm.train(cfg)
    assert 0.0 <= metrics["test/attribute_acc_image"] <= 1.0
    assert (tmp_path / "run" / "checkpoint.pt").exists()

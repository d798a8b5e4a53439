"""TextImageDataset, caption shortening, collation and the loader."""

import logging

import numpy as np
import pytest
import torch

from t2i.data.cub import CUBSource
from t2i.data.dataset import TextImageDataset, collate, make_loader, shorten_caption
from t2i.data.text import Vocabulary, tokenize
from t2i.errors import DataError
from t2i.structures import Batch


@pytest.fixture
def source(cub_root):
    return CUBSource(cub_root)


def _ds(source, split="train", **kw):
    kw.setdefault("base_size", 8)
    kw.setdefault("num_stages", 2)
    return TextImageDataset(source.records(split), source.vocabulary(), train=split == "train", **kw)


def test_shorten_caption_train_subset_and_eval_prefix():
    ids = list(range(100, 130))  # 30 words
    assert shorten_caption(ids[:18], 18, train=True) == ids[:18]
    assert shorten_caption(ids, 18, train=False) == ids[:18]
    seen = set()
    for seed in range(20):
        out = shorten_caption(ids, 18, train=True, generator=torch.Generator().manual_seed(seed))
        assert len(out) == 18 and out == sorted(out) and set(out) <= set(ids)  # order-preserving subset
        seen.add(tuple(out))
    assert len(seen) > 15
    # the same distribution as AttnGAN's numpy recipe: every position kept with probability 18/30
    counts = np.zeros(30)
    for seed in range(600):
        out = shorten_caption(ids, 18, train=True, generator=torch.Generator().manual_seed(seed))
        counts[np.array(out) - 100] += 1
    assert np.allclose(counts / 600, 18 / 30, atol=0.08)


def test_item_contents(source):
    ds = _ds(source, "test")
    item = ds[1]
    assert [tuple(t.shape) for t in item["images"]] == [(3, 8, 8), (3, 16, 16)]
    assert item["key"] == "004.Species_4/Species_4_0002" and item["class_id"] == 4
    assert item["caption_index"] == 1  # eval: index % captions_per_image
    assert item["caption_text"] == source.records("test")[1].captions[1]
    assert ds.vocab.decode(item["caption"].tolist()) == tokenize(item["caption_text"])
    assert item["length"] == len(item["caption"])
    assert "wrong_caption" not in item  # the test split has one class only
    again = ds[1]
    assert all(torch.equal(a, b) for a, b in zip(item["images"], again["images"]))
    fixed = _ds(source, "test", caption_index=7)
    assert fixed[0]["caption_index"] == 7 and fixed[1]["caption_index"] == 7


def test_train_random_caption_and_wrong_caption_of_other_class(source):
    ds = _ds(source, "train")
    torch.manual_seed(0)
    key_class = {r.key: r.class_id for r in source.records("train")}
    cap_ix = set()
    for _ in range(40):
        item = ds[2]
        cap_ix.add(item["caption_index"])
        assert key_class[item["wrong_key"]] != item["class_id"]
        wrong_texts = [c for r in source.records("train") if r.key == item["wrong_key"] for c in r.captions]
        assert ds.vocab.decode(item["wrong_caption"].tolist()) in [tokenize(t) for t in wrong_texts]
        assert item["wrong_length"] == len(item["wrong_caption"])
    assert len(cap_ix) >= 6


def test_long_captions_shortened(source):
    vocab = source.vocabulary()
    ds = _ds(source, "train", words_num=5)
    torch.manual_seed(1)
    item = ds[0]
    full = vocab.encode(tokenize(item["caption_text"]))
    pos = [full.index(i) for i in item["caption"].tolist()]
    assert item["length"] == 5 and pos == sorted(pos)
    ev = _ds(source, "test", words_num=5)[0]
    assert ev["caption"].tolist() == vocab.encode(tokenize(ev["caption_text"]))[:5]


def test_caption_without_known_words(source):
    with pytest.raises(DataError, match="001.Species_1/Species_1_0001"):
        TextImageDataset(source.records("train"), Vocabulary(["zebra"]))
    with pytest.raises(DataError, match="no records"):
        TextImageDataset([], Vocabulary(["zebra"]))


def test_unknown_words_policy(source):
    vocab = Vocabulary.build([["this", "bird", "has"]], unk=True)
    ds = TextImageDataset(source.records("test"), vocab, base_size=8, num_stages=1, unknown="unk", train=False)
    item = ds[0]
    assert item["length"] == len(tokenize(item["caption_text"])) and vocab.unk_id in item["caption"].tolist()
    assert ds.unknown_counts["yellow"] == 20  # species 4: "a yellow <part> and grey wings", 2 x 10 captions
    assert ds.unknown_counts["grey"] == 20


def test_bad_image_named_or_skipped(source, caplog):
    bad = source.records("train")[1].image_path
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="Species_1_0002.jpg"):
        _ds(source, "train")[1]
    ds = _ds(source, "train", skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="t2i.data.dataset"):
        a = ds[1]
        b = ds[1]
    assert a["key"] == b["key"] == source.records("train")[2].key and a["index"] == 2
    assert ds.bad_count == 2
    assert sum("Species_1_0002.jpg" in r.getMessage() for r in caplog.records) == 1  # logged once


def test_collate_sorts_pads_and_aligns(source):
    ds = _ds(source, "train")
    torch.manual_seed(3)
    items = [ds[i] for i in range(6)]
    items[0]["caption"] = items[0]["caption"][:3]
    items[0]["length"] = 3
    batch = collate(items)
    assert isinstance(batch, Batch) and len(batch) == 6
    assert batch.lengths.tolist() == sorted((it["length"] for it in items), reverse=True)
    assert batch.captions.shape == (6, int(batch.lengths.max()))
    assert [tuple(t.shape) for t in batch.images] == [(6, 3, 8, 8), (6, 3, 16, 16)]
    by_key = {it["key"]: it for it in items}
    for row, key in enumerate(batch.keys):  # every row is consistent with its item (loop check)
        it = by_key[key]
        n = it["length"]
        assert batch.captions[row, :n].tolist() == it["caption"].tolist()
        assert (batch.captions[row, n:] == 0).all() and batch.pad_mask[row].sum() == batch.captions.shape[1] - n
        assert torch.equal(batch.images[1][row], it["images"][1])
        assert batch.class_ids[row] == it["class_id"] and batch.caption_ids[row] == it["caption_index"]
        assert batch.caption_texts[row] == it["caption_text"]
        m = it["wrong_length"]
        assert batch.wrong_lengths[row] == m and batch.wrong_captions[row, :m].tolist() == it["wrong_caption"].tolist()
    for it in items:
        del it["wrong_caption"]
    with pytest.raises(ValueError, match="wrong_captions=False"):
        collate(items)
    assert collate(items, wrong_captions=False).wrong_captions is None


def test_make_loader_seeded(source):
    ds = _ds(source, "train")
    keys = []
    for _ in range(2):
        torch.manual_seed(0)
        keys.append([k for b in make_loader(ds, batch_size=4, shuffle=True, seed=5) for k in b.keys])
    assert keys[0] == keys[1] and sorted(keys[0]) == sorted(r.key for r in source.records("train"))
    batches = list(make_loader(ds, batch_size=4, shuffle=False, drop_last=True))
    assert len(batches) == 1 and batches[0].wrong_captions is not None
    test_batches = list(make_loader(_ds(source, "test"), batch_size=2, shuffle=False))
    assert test_batches[0].wrong_captions is None


def test_loader_with_worker_process(source):
    ds = _ds(source, "train")
    a = [b.keys for b in make_loader(ds, batch_size=3, shuffle=True, num_workers=1, seed=2)]
    b = [b.keys for b in make_loader(ds, batch_size=3, shuffle=True, num_workers=1, seed=2)]
    assert a == b and sum(len(k) for k in a) == 6

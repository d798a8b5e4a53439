"""Every data option composes through Hydra and builds its source; the recipe builds datasets."""

import logging
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException

import t2i.data.synthbirds as synthbirds
from t2i.config import CONF_DIR, compose
from t2i.errors import ConfigError, DataError
from t2i.recipes.data import build_datasets, build_source

OPTIONS = {"synthbirds": "cub", "cub": "cub", "coco": "coco_attngan", "coco_json": "coco_json",
           "imagefolder": "imagefolder"}
EXPECTED = {"synthbirds": (18, 10), "cub": (18, 10), "coco": (12, 5), "coco_json": (12, 5), "imagefolder": (18, None)}


def _fixture(kind, root, *makers):
    return dict(zip(("cub", "coco_attngan", "coco_json", "imagefolder"), makers))[kind](root)


def test_every_data_yaml_is_tested():
    mine = {p.stem for p in (CONF_DIR / "data").glob("*.yaml")} - {"mnist"}  # mnist: the DRAW engineer's
    assert mine == set(OPTIONS)


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_compose_and_build_source(option, tmp_path, monkeypatch, make_cub, make_coco_attngan, make_coco_json,
                                  make_imagefolder):
    root = _fixture(OPTIONS[option], tmp_path / option, make_cub, make_coco_attngan, make_coco_json, make_imagefolder)
    cfg = compose("prepare_data", [f"data={option}", f"data.root={root}"])
    assert (cfg.data.words_num, cfg.data.captions_per_image) == EXPECTED[option]
    if option == "synthbirds":
        assert cfg.data.render.captions_per_image == 10
        monkeypatch.setattr(synthbirds, "is_rendered", lambda root, **kw: True)
    source = build_source(cfg.data)
    assert Path(source.root) == root and source.captions_per_image == EXPECTED[option][1]
    assert len(source.records("train")) > 0 and len(source.records("test")) > 0


def test_unknown_option_reported_by_hydra():
    with pytest.raises(ConfigCompositionException, match="nosuchdata"):
        compose("prepare_data", ["data=nosuchdata"])


@pytest.mark.parametrize("option", ["cub", "coco", "coco_json", "imagefolder"])
def test_missing_root_points_at_readme(option, tmp_path):
    cfg = compose("prepare_data", [f"data={option}", f"data.root={tmp_path / 'missing'}"])
    with pytest.raises(DataError, match=r"data/README\.md"):
        build_source(cfg.data)


def test_synthbirds_rendered_on_first_use(tmp_path, monkeypatch, make_cub, caplog):
    calls = []

    def fake_render(root, **kwargs):
        calls.append(kwargs)
        make_cub(root)
        Path(root, "done").touch()
        return Path(root)

    monkeypatch.setattr(synthbirds, "render_dataset", fake_render)
    monkeypatch.setattr(synthbirds, "is_rendered", lambda root, **kw: Path(root, "done").exists())
    cfg = compose("prepare_data", ["data=synthbirds", f"data.root={tmp_path / 'sb'}", "+data.render.workers=1"])
    with caplog.at_level(logging.INFO, logger="t2i.recipes.data"):
        build_source(cfg.data)
        build_source(cfg.data)
    assert len(calls) == 1 and calls[0]["num_species"] == 80 and calls[0]["workers"] == 1
    assert any("rendering the synthetic birds" in r.getMessage() for r in caplog.records)


def test_real_tiny_render_read_back(tmp_path):
    """The renderer's output is read by CUBSource (integration with t2i.data.synthbirds)."""
    root = tmp_path / "sb"
    cfg = compose("prepare_data", ["data=synthbirds", f"data.root={root}", "data.render.num_species=3",
                                   "data.render.images_per_species=2", "data.render.image_size=64",
                                   "+data.render.workers=1", "+data.render.progress=false"])
    train, test, vocab = build_datasets(cfg.data, base_size=8, num_stages=2)
    assert synthbirds.is_rendered(root, **{k: v for k, v in cfg.data.render.items() if k not in ("workers", "progress")})
    assert len(train) + len(test) == 6 and len(vocab) > 10
    rec = train.records[0]
    assert len(rec.captions) == 10 and rec.bbox is not None and rec.attributes
    item = train[0]
    assert [tuple(t.shape) for t in item["images"]] == [(3, 8, 8), (3, 16, 16)]


def test_build_datasets(tmp_path, make_cub):
    root = make_cub(tmp_path / "birds")
    cfg = compose("prepare_data", ["data=cub", f"data.root={root}"])
    train, test, vocab = build_datasets(cfg.data, base_size=8, num_stages=3, words_num=4)
    assert (len(train), len(test)) == (6, 2) and train.train and not test.train
    assert train.words_num == test.words_num == 4 and train.vocab is vocab is test.vocab
    assert [tuple(t.shape) for t in test[0]["images"]] == [(3, 8, 8), (3, 16, 16), (3, 32, 32)]
    assert train[0]["length"] <= 4 and train.wrong_captions
    cfg.data.skip_bad = True
    assert build_datasets(cfg.data, base_size=8, num_stages=1)[0].skip_bad


def test_non_caption_data_config_refused():
    with pytest.raises(ConfigError, match="no 'source'"):
        build_source({"name": "mnist", "root": None})

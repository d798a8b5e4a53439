"""Every option of every config group composes, and its model/encoder nodes instantiate (STYLE.md 16).

Paper-sized models are built on the meta device: shapes and parameter counts, no memory.
"""

from __future__ import annotations

import pytest
import torch
from hydra.errors import ConfigCompositionException

from t2i.config import CONF_DIR, build, compose, to_container
from t2i.errors import WeightsError
from t2i.models.text_encoders import RNNTextEncoder

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
ENCODERS = sorted(p.stem for p in (CONF_DIR / "encoder").glob("*.yaml"))
TRAINS = sorted(p.stem for p in (CONF_DIR / "train").glob("*.yaml"))
DATAS = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))


def test_groups_are_populated():
    assert {"damsm", "stackgan", "stackgan2", "attngan", "draw", "aligndraw"} <= set(MODELS)
    assert {"lstm", "gru", "bert", "minilm"} <= set(ENCODERS)
    assert {"synthbirds", "cub", "coco", "coco_json", "mnist"} <= set(DATAS)


def _instantiate_model(cfg):
    family = cfg.model.family
    if family == "gan":
        from t2i.recipes.gan import build_models
        text = RNNTextEncoder(vocab_size=20, word_dim=16, hidden_dim=8)
        with torch.device("meta"):
            generator, discriminators, spec = build_models(cfg, text)
        assert len(discriminators) == len(generator.resolutions) == len(cfg.model.generator.stages)
        assert spec["generator"]["kwargs"]["sent_dim"] == 16
        return generator
    if family == "damsm":
        from t2i.recipes.damsm import FID_TRUNK, build_encoders
        loads_weights = cfg.model.image_encoders[cfg.model.image_encoder].get("pretrained") == FID_TRUNK
        with torch.device("cpu" if loads_weights else "meta"):  # loading real weights needs real tensors
            text, image = build_encoders(cfg, vocab_size=20)
        assert text.out_dim == 256
        return image
    if family == "draw":
        runtime = {"vocab_size": 20} if cfg.model.name == "aligndraw" else {}
        with torch.device("meta"):
            return build(cfg.model.net, **runtime)
    raise AssertionError(f"unknown family {family}")


@pytest.mark.parametrize("model", MODELS)
def test_every_model_composes_and_builds(model):
    data = "mnist" if model == "draw" else "synthbirds"
    cfg = compose("train", [f"model={model}", f"data={data}"])
    assert cfg.model.name == model
    assert cfg.run_dir == f"runs/{data}/{model}"
    module = _instantiate_model(cfg)
    assert sum(p.numel() for p in module.parameters()) > 0


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds(experiment):
    cfg = compose("train", [f"experiment={experiment}"])
    assert cfg.data.name in ("cub", "coco")
    _instantiate_model(cfg)


@pytest.mark.parametrize("train", TRAINS)
def test_every_train_preset_composes(train):
    cfg = compose("train", [f"train={train}"])
    assert cfg.train.precision in ("auto", "fp32", "fp16", "bf16") and cfg.train.resume in ("auto", "never")


@pytest.mark.parametrize("data", DATAS)
def test_every_data_option_composes_in_train(data):
    cfg = compose("train", [f"data={data}"])
    assert cfg.data.name == data.split("_")[0]  # coco_json is COCO in the official layout


@pytest.mark.parametrize("encoder", ["lstm", "gru"])
def test_rnn_encoders_build(encoder):
    cfg = compose("train", [f"encoder={encoder}", "model=damsm"])
    node = {k: v for k, v in to_container(cfg.encoder).items() if k != "checkpoint"}
    enc = build(node, vocab_size=30)
    assert enc.rnn_type == encoder and enc.out_dim == 256
    assert cfg.encoder.checkpoint == "runs/synthbirds/damsm"


def test_minilm_encoder_builds_from_the_packaged_model():
    cfg = compose("train", ["encoder=minilm", "model=damsm"])
    node = {k: v for k, v in to_container(cfg.encoder).items() if k != "checkpoint"}
    enc = build(node, vocab_size=30)
    assert enc.out_dim == 256


def test_bert_encoder_with_missing_folder_is_a_clear_error(tmp_path):
    cfg = compose("train", ["encoder=bert", f"encoder.pretrained={tmp_path / 'nothing'}", "model=damsm"])
    node = {k: v for k, v in to_container(cfg.encoder).items() if k != "checkpoint"}
    with pytest.raises(WeightsError, match="nothing"):
        build(node, vocab_size=30)


@pytest.mark.parametrize("group,bad", [("model", "nosuchmodel"), ("data", "nosuchdata"), ("encoder", "nope")])
def test_unknown_choice_is_reported(group, bad):
    with pytest.raises(ConfigCompositionException, match=bad):
        compose("train", [f"{group}={bad}"])


def test_generate_config_composes():
    cfg = compose("generate", ["caption=green crown bird"])
    assert cfg.caption == "green crown bird" and cfg.num_images >= 1


@pytest.mark.parametrize("experiment", ["attngan_cub", "attngan_coco"])
def test_attngan_experiments_keep_the_released_objective_whatever_the_cpu_preset(experiment):
    m = compose("train", [f"experiment={experiment}"]).model
    assert (m.loss, m.ma_gp_weight, m.augment, m.lr_g, m.lr_d, list(m.betas)) == ("bce", 0.0, None, 2e-4, 2e-4,
                                                                                   [0.5, 0.999])
    assert m.discriminator.batch_norm is True and m.discriminator.spectral_norm is False
    assert m.ema_beta == 0.999 and m.generator.base_size == 64  # TREE.BASE_SIZE, though the CPU preset starts at 32 px

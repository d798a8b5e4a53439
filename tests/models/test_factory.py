"""The model-class allow-list of t2i.models.factory: a spec read from a file can build only t2i's model
classes, with plain-value arguments, and nothing it names is imported or called before the check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from t2i.errors import CheckpointError
from t2i.models.factory import MODEL_CLASSES, build_from_spec, check_plain, make_spec


def _touch_spec(marker: Path) -> list[dict]:
    """Specs that would create ``marker`` (or run code) if the factory built what they name."""
    node = {"_target_": "pathlib.Path.touch", "self": str(marker)}
    return [
        {"target": "t2i.config.build", "kwargs": {"node": node}},                  # the verified exploit
        {"target": "t2i.config.instantiate", "kwargs": {"config": node}},
        {"target": "t2i.data.synthbirds.render_dataset", "kwargs": {"root": str(marker.parent / "r"),
                                                                     "num_species": 1}},
        {"target": "os.system", "kwargs": {"command": f"touch {marker}"}},
        {"target": "builtins.eval", "kwargs": {"source": f"open({str(marker)!r}, 'w')"}},
        {"target": "subprocess.run", "kwargs": {"args": ["touch", str(marker)]}},
        {"target": "t2i.models.generator", "kwargs": {}},                          # a module, not a class
        {"target": "t2i.models.layers.fold_batchnorm", "kwargs": {}},               # a t2i function
    ]


@pytest.mark.parametrize("index", range(8))
def test_foreign_targets_are_refused_before_import(tmp_path, index):
    marker = tmp_path / "pwned"
    spec = _touch_spec(marker)[index]
    module = spec["target"].rpartition(".")[0]
    was_loaded = module in sys.modules
    with pytest.raises(CheckpointError, match="refusing to build"):
        build_from_spec(spec)
    assert not marker.exists() and not (tmp_path / "r").exists()
    if not was_loaded:  # checked against the list before anything named is imported
        assert module not in sys.modules


@pytest.mark.parametrize("kwargs, message", [
    ({"stages": ["init"], "ngf": {"_target_": "os.system", "command": "true"}}, "_target_"),
    ({"stages": ["init"], "stage_options": {"init": {"x": {"_target_": "builtins.eval"}}}}, "_target_"),
    ({"stages": ["init"], "ngf": torch.tensor(4)}, "Tensor"),
    ({"stages": ["init"], "ngf": float("nan")}, "nan"),
    ({"stages": ["init"], "stage_options": {1: {}}}, "non-string key"),
])
def test_non_plain_kwargs_are_refused(kwargs, message):
    with pytest.raises(CheckpointError, match=message):
        build_from_spec(make_spec("t2i.models.generator.MultiStageGenerator", **kwargs))


def test_malformed_specs_are_one_line_errors():
    for spec in (None, [], "t2i.models.draw.DRAW", {"kwargs": {}}, {"target": 3},
                 {"target": "t2i.models.draw.DRAW", "kwargs": []}):
        with pytest.raises(CheckpointError):
            build_from_spec(spec)


def test_every_listed_class_is_a_module_class():
    import importlib

    for target in MODEL_CLASSES:
        module, _, name = target.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        assert isinstance(cls, type) and issubclass(cls, torch.nn.Module), target


def test_plain_values_pass():
    check_plain({"a": [1, 2.5, "x", None, True, {"b": [[0]]}], "c": (1, 2)})
    g = build_from_spec(make_spec("t2i.models.generator.MultiStageGenerator", stages=["init"], ngf=4, z_dim=4,
                                  c_dim=4, sent_dim=8, word_dim=8, base_size=16))
    assert isinstance(g, torch.nn.Module)


def _tiny_export(folder: Path) -> Path:
    from t2i.data.text import Vocabulary
    from tests.test_evaluation import write_export  # the tiny export in GANTrainer.export's format

    return write_export(folder, Vocabulary.build([["a", "green", "crown", "bird"]]))


@pytest.mark.parametrize("part", ["generator", "text_encoder"])
def test_pipeline_refuses_a_malicious_export(tmp_path, part):
    """An export whose model.json names a callable is refused with one line and runs nothing."""
    from t2i.pipeline import Text2ImagePipeline

    export = _tiny_export(tmp_path / "export")
    assert Text2ImagePipeline.from_export(export)(["green crown bird"]).images.shape[0] == 1
    meta = json.loads((export / "model.json").read_text())
    marker = tmp_path / "pwned"
    for spec in _touch_spec(marker):
        meta["model_spec"][part] = spec
        (export / "model.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match="refusing to build"):
            Text2ImagePipeline.from_export(export)
        assert not marker.exists()


# ------------------------------------------------------------------ the registry: @register_model, save/load


def test_allow_list_and_decorator_are_one_registry():
    import importlib

    from t2i.models.factory import REGISTERED_MODELS

    for path in MODEL_CLASSES:
        importlib.import_module(path.rpartition(".")[0])
    assert set(REGISTERED_MODELS) == set(MODEL_CLASSES)

    from torch import nn

    from t2i.models.factory import register_model

    class Stranger(nn.Module):
        pass

    with pytest.raises(TypeError, match="MODEL_CLASSES"):
        register_model(Stranger)


def test_constructor_arguments_are_recorded_with_defaults():
    from t2i.models.generator import MultiStageGenerator
    from t2i.models.text_encoders import RNNTextEncoder

    text = RNNTextEncoder(20, 8, hidden_dim=4)
    assert text.init_kwargs == dict(vocab_size=20, word_dim=8, hidden_dim=4, num_layers=1, bidirectional=True,
                                    dropout=0.5, rnn_type="lstm", sentence="last")
    gen = MultiStageGenerator(("init", "attention"), ngf=4, z_dim=6, c_dim=5, sent_dim=8, word_dim=8,
                              base_size=8, stage_options={"init": {}})
    assert gen.init_kwargs["stages"] == ["init", "attention"] and gen.init_kwargs["res_blocks"] == 2
    assert gen.init_kwargs["stage_options"] == {"init": {}} and gen.init_kwargs["freeze_stages"] == []


def test_save_module_and_load_module_round_trip(tmp_path):
    from t2i.models.factory import load_module, module_spec, read_module_record, save_module
    from t2i.models.generator import MultiStageGenerator

    torch.manual_seed(0)
    gen = MultiStageGenerator(["init", "joint"], ngf=4, z_dim=6, c_dim=5, sent_dim=8, base_size=8, res_blocks=1)
    spec = save_module(tmp_path / "generator.safetensors", gen, note="hello")
    assert spec == module_spec(gen) and spec["target"] == "t2i.models.generator.MultiStageGenerator"
    assert read_module_record(tmp_path / "generator.safetensors")["note"] == "hello"
    loaded = load_module(tmp_path / "generator.safetensors")
    assert type(loaded) is MultiStageGenerator and loaded.resolutions == gen.resolutions
    for key, value in gen.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    # the JSON record is untrusted: a foreign target is refused before anything is built
    record = json.loads((tmp_path / "generator.json").read_text())
    record["spec"]["target"] = "os.system"
    (tmp_path / "generator.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="refusing to build 'os.system'"):
        load_module(tmp_path / "generator.safetensors")


def test_an_unregistered_module_cannot_be_saved(tmp_path):
    from t2i.models.factory import save_module

    with pytest.raises(CheckpointError, match="cannot save a Linear"):
        save_module(tmp_path / "x.safetensors", torch.nn.Linear(2, 2))
    assert not list(tmp_path.iterdir())

"""The evaluation driver (t2i/evaluation.py) on a tiny export, tiny CUB-format data and a tiny stand-in Inception."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import t2i.evaluation as ev
from t2i.data.cub import CUBSource
from t2i.data.dataset import TextImageDataset
from t2i.errors import DataError, WeightsError
from t2i.data.attributes import colour_schema, parse_caption_attributes
from t2i.metrics.attribute_accuracy import AttributeClassifier, save_attribute_classifier
from t2i.metrics.fid import frechet_distance, load_statistics
from t2i.metrics.r_precision import caption_hits
from t2i.models.factory import build_from_spec, make_spec
from t2i.models.image_encoders import LightImageEncoder
from t2i.pipeline import Text2ImagePipeline
from t2i.export import resolve_export
from t2i.models.damsm import save_image_encoder, save_text_encoder

SIZE = 32


class TinyInception(nn.Module):
    """Stand-in for the FID Inception: ``(pool [N, 6], logits [N, 5] | None)`` from 299x299 inputs."""

    def __init__(self, logits: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 8, stride=8)
        self.fc = nn.Linear(6, 5) if logits else None

    @property
    def has_logits(self) -> bool:
        return self.fc is not None

    def forward(self, x):
        pool = torch.tanh(self.conv(x)).mean(dim=(2, 3)) + x.mean(dim=(1, 2, 3))[:, None]
        return pool, (self.fc(pool) if self.fc is not None else None)


def write_export(folder: Path, vocab) -> Path:
    """A tiny 1-stage export in the format of GANTrainer.export (untrained weights)."""
    torch.manual_seed(0)
    text_spec = make_spec("t2i.models.text_encoders.RNNTextEncoder", vocab_size=len(vocab), word_dim=8, hidden_dim=4,
                          dropout=0.0)
    gen_spec = make_spec("t2i.models.generator.MultiStageGenerator", stages=["init"], ngf=4, z_dim=6, c_dim=5,
                         sent_dim=8, word_dim=8, res_blocks=1, base_size=SIZE)
    folder.mkdir(parents=True, exist_ok=True)
    for name, spec in (("generator", gen_spec), ("text_encoder", text_spec)):
        save_file({k: v.contiguous() for k, v in build_from_spec(spec).state_dict().items()}, folder / f"{name}.safetensors")
    meta = {"format": "t2i-export", "version": 1, "kind": "gan", "step": 0, "config": {},
            "model_spec": {"name": "tiny", "z_dim": 6, "words_num": 18, "generator": gen_spec, "text_encoder": text_spec}}
    (folder / "model.json").write_text(json.dumps(meta))
    (folder / "vocab.json").write_text(json.dumps(vocab.to_dict()))
    return folder


def write_damsm(folder: Path, vocab) -> Path:
    torch.manual_seed(1)
    text = build_from_spec(make_spec("t2i.models.text_encoders.RNNTextEncoder", vocab_size=len(vocab), word_dim=8,
                                     hidden_dim=4, dropout=0.0))
    save_text_encoder(folder, text, vocab)
    save_image_encoder(folder, LightImageEncoder(embed_dim=8, width=4, image_size=16))
    return folder


@pytest.fixture
def setup(tmp_path, make_cub):
    """Tiny CUB (4 classes x 3 images, 2 test classes), its eval datasets, an export and a DAMSM."""
    root = make_cub(tmp_path / "birds", num_classes=4, per_class=3, test_classes=2)
    source = CUBSource(root)
    vocab = source.vocabulary()

    def split(name):
        return TextImageDataset(source.records(name), vocab, base_size=SIZE, num_stages=1, train=False,
                                wrong_captions=False)

    runs = tmp_path / "runs"
    write_damsm(runs / "tiny" / "damsm", vocab)
    export = write_export(tmp_path / "run" / "export", vocab)
    return {"source": source, "vocab": vocab, "train": split("train"), "test": split("test"), "runs": runs,
            "export": export, "tmp": tmp_path}


def suite_for(setup, names, monkeypatch, logits=True, **kw):
    monkeypatch.setattr("t2i.metrics.inception.load_fid_inception", lambda path=None, device="cpu": TinyInception(logits))
    monkeypatch.setattr("t2i.evaluation.features.inception_weights_file", lambda path: None)
    args = dict(data_name="tiny", runs_dir=setup["runs"], reference_split="test",
                reference_images=lambda: ev.real_images(setup["test"], batch_size=4, progress=False),
                train_images=lambda: ev.real_images(setup["train"], batch_size=4, progress=False),
                caption_records=setup["test"].records, attribute_schema=setup["source"].attribute_schema(),
                image_size=SIZE, vocab=setup["vocab"], attribute_options={"width": 4, "image_size": 16, "steps": 3},
                options={"r_precision": {"folds": 2}, "is": {"splits": 2}, "kid": {"num_subsets": 5, "max_subset_size": 3}},
                inception_weights="fake.pth" if logits else None)
    args.update(kw)
    return ev.build_suite(names, **args)


def test_caption_plan_visits_every_caption_once_and_starts_like_the_dataset():
    plan = ev.caption_plan(num_records=7, captions_per_record=3, n=21)
    assert sorted(plan) == [(r, c) for r in range(7) for c in range(3)]
    first = plan[:7]
    assert sorted(r for r, _ in first) == list(range(7))  # one pass: every record once
    assert all(c == r % 3 for r, c in first)  # TextImageDataset's evaluation caption: index % C
    assert ev.caption_plan(7, 3, 30)[21:] == plan[:9]
    # records are listed class by class; a prefix of the plan samples them all
    classes = np.repeat(np.arange(5), 150)
    assert len(set(classes[[r for r, _ in ev.caption_plan(750, 10, 50)]])) == 5


def test_generated_images_follow_the_plan_and_are_reproducible(setup):
    pipe = Text2ImagePipeline.from_export(setup["export"])
    records = setup["test"].records
    a = list(ev.generated_images(pipe, records, n=8, seed=3, batch_size=3, progress=False))
    b = list(ev.generated_images(pipe, records, n=8, seed=3, batch_size=3, progress=False))
    assert [len(x) for x in a] == [3, 3, 2]
    images = torch.cat([x.images for x in a])
    assert images.shape == (8, 3, SIZE, SIZE) and torch.equal(images, torch.cat([x.images for x in b]))
    plan = ev.caption_plan(len(records), 10, 8)
    assert sum((x.captions for x in a), []) == [records[r].captions[c] for r, c in plan]
    assert torch.cat([x.class_ids for x in a]).tolist() == [records[r].class_id for r, _ in plan]
    other = torch.cat([x.images for x in ev.generated_images(pipe, records, n=8, seed=4, batch_size=3, progress=False)])
    assert not torch.equal(images, other)


def test_generated_images_of_an_aligndraw_pipeline(setup):
    """alignDRAW has no separate text encoder: the stream goes through its own caption encoder and prior."""
    from t2i.models.aligndraw import AlignDRAW

    torch.manual_seed(0)
    model = AlignDRAW(vocab_size=len(setup["vocab"]), height=SIZE, width=SIZE, steps=2, z_dim=3, enc_dim=6,
                      dec_dim=6, read_n=2, write_n=2, word_dim=5, lang_dim=4, align_dim=5)
    pipe = Text2ImagePipeline(model, None, setup["vocab"], z_dim=0)
    records = setup["test"].records
    a = torch.cat([x.images for x in ev.generated_images(pipe, records, n=5, seed=1, batch_size=2, progress=False)])
    b = torch.cat([x.images for x in ev.generated_images(pipe, records, n=5, seed=1, batch_size=2, progress=False)])
    assert a.shape == (5, 3, SIZE, SIZE) and torch.equal(a, b) and a.min() >= -1 and a.max() <= 1


def test_real_images_each_once_with_their_evaluation_caption(setup):
    ds = setup["test"]
    batches = list(ev.real_images(ds, n=None, batch_size=4, progress=False))
    assert sum(len(b) for b in batches) == len(ds) == 6
    order = ev.record_order(6)
    assert sorted(order) == list(range(6)) and sum((b.keys for b in batches), []) == [ds.records[i].key for i in order]
    last = order[-1]
    assert torch.equal(batches[-1].images[-1], ds[last]["images"][-1])
    assert batches[-1].captions[-1] == ds.records[last].captions[last % 10]
    assert batches[0].attributes[0] == ds.records[order[0]].attributes
    assert [b.keys for b in ev.real_images(ds, n=3, batch_size=4, progress=False)] == [[ds.records[i].key for i in order[:3]]]


def test_evaluate_pipeline_writes_results_with_right_counts(setup, monkeypatch):
    names = ["fid", "kid", "is", "r_precision", "attribute_accuracy"]
    suite = suite_for(setup, names, monkeypatch)
    ceiling = ev.attribute_ceiling(suite, ev.real_images(setup["test"], batch_size=4, progress=False))
    pipe = Text2ImagePipeline.from_export(setup["export"])
    result = ev.evaluate_pipeline(pipe, suite, setup["test"].records, names, num_images=10, seed=0, batch_size=4)
    m = result["metrics"]
    assert set(m) >= {"fid", "kid", "kid_std", "is", "is_std", "r_precision", "r_precision_std", "attribute_accuracy",
                      "attribute_accuracy_real"}
    assert m["attribute_accuracy_real"] == ceiling
    assert result["counts"]["images"] == 10 and result["counts"]["fid_reference_images"] == 6
    assert result["counts"]["attribute_accuracy_real_images"] == 6
    assert 1.0 <= m["is"] <= 5.0 and 0.0 <= m["r_precision"] <= 1.0 and m["fid"] >= 0
    # FID against the cached real statistics equals the closed form on features computed here
    gen = torch.cat([b.images for b in ev.generated_images(pipe, setup["test"].records, 10, seed=0, batch_size=4,
                                                           progress=False)])
    feats, _ = ev.inception_features([gen], TinyInception(), "pytorch-fid")
    real, _ = ev.inception_features(ev.real_images(setup["test"], progress=False), TinyInception(), "pytorch-fid")
    expected = frechet_distance(feats.double().mean(0).numpy(), np.cov(feats.double().numpy(), rowvar=False),
                                real.double().mean(0).numpy(), np.cov(real.double().numpy(), rowvar=False))
    assert m["fid"] == pytest.approx(expected, rel=1e-5)

    result.update(export=str(setup["export"]), data="tiny")
    json_path, md_path = ev.write_results(setup["tmp"] / "eval", result)
    stored = json.loads(json_path.read_text())
    assert stored["metrics"]["fid"] == pytest.approx(m["fid"]) and stored["counts"]["images"] == 10
    assert stored["profile"] == "pytorch-fid" and stored["seed"] == 0 and stored["export"] == str(setup["export"])
    assert any(k.endswith("text_encoder.safetensors") and len(v) == 64 for k, v in stored["weights"].items())
    assert stored["timings"]["total"] > 0
    md = md_path.read_text()
    assert "| FID |" in md and "| R-precision |" in md and "ceiling" in md
    assert not list((setup["tmp"] / "eval").glob(".*.tmp"))


def test_attribute_ceiling_is_computed_from_the_real_images(setup, monkeypatch):
    schema = colour_schema(setup["source"].attribute_schema())
    assert set(schema) == {"crown", "wing", "belly"}  # has_crown_color::red ... -> crown
    torch.manual_seed(0)
    classifier = AttributeClassifier(schema, width=4, image_size=16).eval()
    path = setup["tmp"] / "attr.pt"
    save_attribute_classifier(path, classifier)
    suite = suite_for(setup, ["attribute_accuracy"], monkeypatch, attribute_classifier=str(path))
    value = ev.attribute_ceiling(suite, ev.real_images(setup["test"], batch_size=4, progress=False))
    ds = setup["test"]
    images = torch.stack([ds[i]["images"][-1] for i in range(len(ds))])
    pred = suite.attribute_classifier.predict(images)
    scores = []
    for i, record in enumerate(ds.records):  # any order: the ceiling is a mean over images
        named = parse_caption_attributes(record.captions[i % 10], schema)
        checks = [int(pred[p][i]) == schema[p].index(v) for p, v in named.items()]
        if checks:
            scores.append(sum(checks) / len(checks))
    assert value == pytest.approx(sum(scores) / len(scores))


def test_attribute_classifier_is_trained_once_on_train_images_and_cached(setup, monkeypatch):
    calls = []
    train = lambda: calls.append(1) or ev.real_images(setup["train"], batch_size=4, progress=False)  # noqa: E731
    suite_for(setup, ["attribute_accuracy"], monkeypatch, train_images=train)
    path = setup["runs"] / "tiny" / "attribute_classifier.pt"
    assert path.is_file() and calls == [1]
    suite_for(setup, ["attribute_accuracy"], monkeypatch, train_images=train)
    assert calls == [1]  # loaded from the cache


def test_r_precision_uses_99_mismatched_captions_of_other_classes(setup, monkeypatch):
    drawn = []
    import t2i.metrics.registry as registry

    original = registry.sample_mismatched_captions

    def spy(class_ids, n, rng=None, pool_class_ids=None):
        idx = original(class_ids, n, rng=rng, pool_class_ids=pool_class_ids)
        drawn.append((np.asarray(class_ids), idx, pool_class_ids))
        return idx

    monkeypatch.setattr(registry, "sample_mismatched_captions", spy)
    suite = suite_for(setup, ["r_precision"], monkeypatch)
    result = ev.evaluate(["r_precision"], ev.real_images(setup["test"], batch_size=4, progress=False), suite, seed=5)
    classes, idx, pool_classes = drawn[0]
    assert idx.shape == (6, 99)
    assert (pool_classes[idx] != classes[:, None]).all()
    # the same number by a loop over images, with the same draw
    ds = setup["test"]
    order = ev.record_order(len(ds))  # the order real_images yields them in
    images = torch.stack([ds[i]["images"][-1] for i in order])
    image_vecs = suite.damsm.image_vectors(images)
    true = suite.damsm.sentence_vectors([ds.records[i].captions[i % 10] for i in order])
    pool = suite.damsm.sentence_vectors(suite.caption_pool)
    hits = [bool(caption_hits(image_vecs[i:i + 1], true[i:i + 1], pool[torch.from_numpy(idx[i])][None])[0])
            for i in range(6)]
    shuffled = np.array(hits)[np.random.default_rng(5).permutation(6)]  # DM-GAN shuffles; seed = evaluation seed
    folds = [np.mean(shuffled[:3]), np.mean(shuffled[3:])]
    assert result["protocol"]["r_precision"]["shuffle_seed"] == 5
    assert result["metrics"]["r_precision"] == pytest.approx(np.mean(folds))
    assert result["metrics"]["r_precision_std"] == pytest.approx(np.std(folds))
    assert result["counts"]["r_precision_hits"] == sum(hits)


def test_stats_cache_is_reused_and_refused_across_profiles(setup, monkeypatch):
    calls = []

    def reference():
        calls.append(1)
        return ev.real_images(setup["test"], batch_size=4, progress=False)

    suite = suite_for(setup, ["fid"], monkeypatch, reference_images=reference)
    path = ev.stats_path(setup["runs"], "tiny", "test", "pytorch-fid")
    assert path.is_file() and calls == [1] and suite.reference.count == 6
    again = suite_for(setup, ["fid"], monkeypatch, reference_images=reference)
    assert calls == [1] and np.array_equal(again.reference.mu, suite.reference.mu)
    suite_for(setup, ["fid"], monkeypatch, reference_images=reference, image_size=SIZE * 2)
    assert calls == [1, 1]  # made for another image size: recomputed
    with pytest.raises(DataError, match="profile 'pytorch-fid', not 'tf1'"):
        suite_for(setup, ["fid"], monkeypatch, reference_images=reference, profile="tf1", stats_cache=str(path))
    # a default cache file that holds statistics of another profile is refused too
    path.rename(ev.stats_path(setup["runs"], "tiny", "test", "tf1"))
    with pytest.raises(DataError, match="recompute them with 'tf1'"):
        suite_for(setup, ["fid"], monkeypatch, reference_images=reference, profile="tf1")
    assert load_statistics(ev.stats_path(setup["runs"], "tiny", "test", "tf1"), "pytorch-fid").count == 6


def test_inception_score_without_logits_names_the_weights_file(setup, monkeypatch):
    with pytest.raises(WeightsError, match="metrics.inception_weights=/path/pt_inception-2015-12-05-6726825d.pth"):
        suite_for(setup, ["is"], monkeypatch, logits=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 200)))
        scripted.save(str(setup["tmp"] / "cub_inception.pt"))
    # TorchScript is code: refused unless trusted explicitly (nothing of it is loaded before the refusal)
    with pytest.raises(WeightsError, match="is TorchScript, which is code .* metrics.is.trust_torchscript=true"):
        suite_for(setup, ["is"], monkeypatch, logits=False, is_classifier=str(setup["tmp"] / "cub_inception.pt"))
    suite = suite_for(setup, ["is"], monkeypatch, logits=False, is_classifier=str(setup["tmp"] / "cub_inception.pt"),
                      trust_torchscript=True)
    suite.options["is"]["batch_size"] = 4  # StackGAN scores full batches only (64 by default)
    result = ev.evaluate(["is"], ev.real_images(setup["test"], batch_size=4, progress=False), suite)
    assert result["counts"]["is_classes"] == 200 and result["metrics"]["is"] >= 1.0
    assert result["protocol"]["is"]["profile"] == "stackgan-cub" and not result["protocol"]["is"]["skip_first_logit"]
    assert result["counts"]["is_images"] == 4 * (result["counts"]["images"] // 4)
    with pytest.raises(WeightsError, match="does not exist"):
        ev.load_is_classifier(setup["tmp"] / "missing.pt")


def test_clear_errors_for_too_few_images_and_nan_images(setup, monkeypatch):
    suite = suite_for(setup, ["is", "r_precision"], monkeypatch)
    suite.options["is"].update(splits=10)
    few = ev.real_images(setup["test"], n=4, batch_size=4, progress=False)
    with pytest.raises(DataError, match="at least 10 images"):
        ev.evaluate(["is"], few, suite)
    batch = next(ev.real_images(setup["test"], n=4, batch_size=4, progress=False))
    batch.images[1, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        ev.evaluate(["is"], [batch], suite)
    with pytest.raises(DataError, match="r_precision needs at least 2 images"):
        suite.check(["r_precision"], num_images=1)
    suite.check(["r_precision"], num_images=2)
    with pytest.raises(Exception, match="unknown metric 'fld'"):
        ev.evaluate(["fld"], [batch], suite)


def test_resolve_export(setup, tmp_path):
    run = setup["export"].parent
    assert resolve_export(run) == setup["export"]
    assert resolve_export(setup["export"]) == setup["export"]
    assert resolve_export(None, tmp_path) == setup["export"]
    with pytest.raises(Exception, match="does not exist"):
        resolve_export(tmp_path / "nope")

"""Metrics chosen by name; conf/metrics composes."""

import pytest

from t2i.errors import ConfigError
from t2i.metrics.registry import METRICS, get_metric


def test_registry_names_and_unknown_name():
    assert set(METRICS) == {"fid", "is", "kid", "r_precision", "attribute_accuracy"}
    assert get_metric("fid") is METRICS["fid"]
    with pytest.raises(ConfigError, match="attribute_accuracy, fid, is, kid, r_precision"):
        get_metric("precision_recall")


@pytest.mark.parametrize("option", ["default", "dmgan"])
def test_metric_configs_compose(option):
    from t2i.config import compose

    cfg = compose("train", [f"+metrics={option}"])
    assert set(cfg.metrics.names) <= set(METRICS)
    assert cfg.metrics.profile in {"pytorch-fid", "tf1", "clean-fid"}
    assert cfg.metrics.r_precision.drop_last_per_fold is (option == "dmgan")


def test_a_new_metric_is_one_registered_function_fed_by_the_one_pass():
    """A toy metric (the mean norm of the Inception pool features) registered as a metric file would register it:
    the driver computes the features once, hands them over, and the table shows its label."""
    import numpy as np
    import torch

    import t2i.evaluation as ev
    from t2i.metrics.profiles import get_profile
    from t2i.metrics.registry import METRIC_DRIVERS, MetricInputs, MetricResult, get_driver, register_metric

    class Pool(torch.nn.Module):  # a fake Inception: pool = per-channel means, no logits
        def forward(self, x):
            return x.mean(dim=(2, 3)).repeat(1, 4), None

    seen = []

    @register_metric("feature_norm", needs=("inception_pool",), uses=("inception",), label="mean feature norm",
                     better="lower", min_images=lambda options: int(options.get("at_least", 1)))
    def _feature_norm(inputs: MetricInputs) -> MetricResult:
        seen.append(inputs.features["inception_pool"].shape)
        norms = inputs.features["inception_pool"].norm(dim=1) * float(inputs.options.get("scale", 1.0))
        return MetricResult({"feature_norm": float(norms.mean())}, {"feature_norm_images": inputs.count})

    try:
        assert get_driver("feature_norm").label == "mean feature norm" and "feature_norm" in METRICS
        suite = ev.EvaluationSuite(inception=Pool(), options={"feature_norm": {"scale": 2.0, "at_least": 3}})
        g = torch.Generator().manual_seed(0)
        images = torch.rand(6, 3, 8, 8, generator=g) * 2 - 1
        batches = [ev.ImageBatch(images[i:i + 3], ["a bird"] * 3, torch.zeros(3, dtype=torch.long)) for i in (0, 3)]
        result = ev.evaluate(["feature_norm"], batches, suite)
        expected = 2.0 * Pool()(get_profile("pytorch-fid")(images))[0].norm(dim=1).mean()
        assert result["metrics"]["feature_norm"] == pytest.approx(float(expected), rel=1e-5)
        assert seen == [(6, 12)] and result["counts"]["feature_norm_images"] == 6
        assert "| mean feature norm |" in ev.format_table(result)
        with pytest.raises(Exception, match="feature_norm needs at least 3 images"):
            suite.check(["feature_norm"], num_images=2)
        with pytest.raises(ValueError, match="unknown features"):
            register_metric("bad", needs=("pixels",))
        assert np.isfinite(result["metrics"]["feature_norm"])
    finally:
        METRIC_DRIVERS.pop("feature_norm", None)

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

import pytest
import torch
from torch import nn

from t2i.training.ema import EMA


def test_update_is_the_references_running_average_and_copies_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMA(model, beta=0.9)
    before = [p.clone() for p in ema.shadow.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(8, 3))  # moves the BatchNorm running statistics
    ema.update()
    for old, new, live in zip(before, ema.shadow.parameters(), model.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * live)  # avg_p.mul_(0.9).add_(0.1, p)
        assert not new.requires_grad
    for b_ema, b in zip(ema.shadow.buffers(), model.buffers()):
        assert torch.equal(b_ema, b)


def test_beta_outside_the_unit_interval_is_refused():
    with pytest.raises(ValueError, match="beta must be in"):
        EMA(nn.Linear(2, 2), beta=1.0)

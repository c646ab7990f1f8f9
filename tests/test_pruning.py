"""Structured pruning removes the stated fraction of channels, and the pruned model still trains and loads."""

import pytest
import torch

from diffattr.errors import InputError
from diffattr.models import PixelDiffusion, build_scheduler, build_unet
from diffattr.pruning import prunable_channels, prune_unet
from tests.conftest import TINY_MODEL

# Channel counts for which 30% removal keeps multiples of the 4 GroupNorm groups and 2 heads exactly.
EXACT = {
    **TINY_MODEL,
    "block_out_channels": [40, 80],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": 40,
}


def test_pruning_removes_the_stated_fraction_and_runs_forward_and_backward(tmp_path):
    unet = build_unet(EXACT, sample_size=8, channels=1)
    before = prunable_channels(unet)
    record = prune_unet(unet, 0.3)
    assert record.channels_before == before
    assert record.removed_fraction == pytest.approx(0.3, abs=1e-9)
    assert record.parameters_after < 0.6 * record.parameters_before
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 700])
    out = unet(x, t).sample
    assert out.shape == x.shape
    out.square().mean().backward()
    assert all(p.grad is not None for p in unet.parameters())

    model = PixelDiffusion(unet, build_scheduler({"num_train_timesteps": 1000, "beta_schedule": "linear"}))
    model.save_pretrained(tmp_path / "pruned")
    loaded = PixelDiffusion.from_pretrained(tmp_path / "pruned")
    torch.testing.assert_close(loaded.unet(x, t).sample, unet(x, t).sample)


def test_rounding_to_groupnorm_is_reported_and_ratio_is_checked():
    record = prune_unet(build_unet(TINY_MODEL, sample_size=8, channels=1), 0.3)
    assert record.removed_fraction >= 0.3  # 8 and 16 channels keep multiples of 4 groups: 4 and 8 (+ 12)
    with pytest.raises(InputError, match="shapley.pruning.ratio"):
        prune_unet(build_unet(TINY_MODEL, sample_size=8, channels=1), 1.0)

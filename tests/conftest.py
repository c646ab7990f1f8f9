"""Shared fixtures: a tiny UNet and tiny images, so unit tests take seconds on two cores."""

import pytest
import torch

from diffattr.models import PixelDiffusion, build_scheduler, build_unet

TINY_MODEL = {
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D"],
    "norm_num_groups": 4,
    "attention_head_dim": 4,
    "dropout": 0.0,
    "resnet_time_scale_shift": "default",
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def tiny_model() -> PixelDiffusion:
    torch.manual_seed(0)
    return PixelDiffusion(
        unet=build_unet(TINY_MODEL, sample_size=8, channels=1),
        scheduler=build_scheduler({"num_train_timesteps": 1000, "beta_schedule": "linear"}),
    )


@pytest.fixture
def tiny_images() -> torch.Tensor:
    return torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1

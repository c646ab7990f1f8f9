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


@pytest.fixture
def tiny_clip(tmp_path):
    """A random 1-layer open_clip model registered as 'tiny-test-clip', saved to a local file."""
    import json

    import open_clip

    tiny = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
    }
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny-test-clip.json").write_text(json.dumps(tiny))
    open_clip.add_model_config(tmp_path / "configs")
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-test-clip")
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    return "tiny-test-clip", tmp_path / "clip.pt"


# The xdist group of the heavy presets' toy runs: with the demo's end-to-end run, the two longest chains
# of work (each about half an hour of one worker), which start first, side by side.
LONGEST_GROUPS = {"one-job-at-a-time"}


def _rank(item: pytest.Item) -> int:
    """0: the demo's end-to-end run and the heavy presets' toy runs; 1: other workflow runs; 2: unit tests."""
    group = item.get_closest_marker("xdist_group")
    if item.get_closest_marker("e2e") or (group and group.args[0] in LONGEST_GROUPS):
        return 0
    return 1 if item.get_closest_marker("slow") else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first: the demo's end-to-end run and the heavy presets' toy runs, then the other workflow
    runs, then unit tests, so that the workers of `pytest -n 2` (make test) start the long runs at once
    and finish together."""
    items.sort(key=_rank)

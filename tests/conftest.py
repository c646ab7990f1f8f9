"""Shared fixtures: a tiny UNet and tiny images, so unit tests take seconds on two cores; the tiny workflow
runs, made once per session for every test that reads them."""

import pytest
import torch

from diffattr.models import PixelDiffusion, build_scheduler, build_unet
from tests.workflow_helpers import TINY, TINY_SHAPLEY, finished_run, shared_folder

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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A workspace after a complete local run of the tiny workflow (TINY): every method's rules. Made once
    per session for every pytest-xdist worker; read it only (copy_workspace for a run to change)."""
    return finished_run(shared_folder(tmp_path_factory), "tiny", TINY)


@pytest.fixture(scope="session")
def tiny_shapley_run(tmp_path_factory):
    """A workspace after a complete local run of the tiny contributor branch (TINY_SHAPLEY), made and
    shared as tiny_run is; read it only."""
    return finished_run(shared_folder(tmp_path_factory), "tiny-shapley", TINY_SHAPLEY)


def _rank(item: pytest.Item) -> int:
    """0: the presets' toy runs (the longest tests); 1: other workflow runs; 2: unit tests."""
    if item.originalname.startswith("test_preset_runs_end_to_end"):
        return 0
    return 1 if item.get_closest_marker("slow") else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first: the presets' toy runs, then the other workflow runs, then unit tests, so that the
    workers of `pytest -n 2` (make test) start the long runs at once and finish together."""
    items.sort(key=_rank)


ONE_TEST_BUDGET_S = 240  # no test of make test should take longer on 2 cores (README, "The test suite")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Name the tests that took longer than the budget of one test, so that CI's log says it."""
    over = [
        f"{report.nodeid} ({report.duration:.0f} s)"
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call" and getattr(report, "duration", 0) > ONE_TEST_BUDGET_S
    ]
    if over:
        terminalreporter.write_line(f"over the {ONE_TEST_BUDGET_S} s budget of one test: " + "; ".join(over))

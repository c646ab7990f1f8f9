"""Training, saving, loading and sampling of the pixel diffusion family."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline

from diffattr.device import resolve_device
from diffattr.models import PixelDiffusion
from diffattr.outputs import evenly_spaced_timesteps, measure_loss
from diffattr.sampling import ddim_sample
from diffattr.training import checkpoint_steps, draw_timesteps, total_steps, train

TRAIN = {
    "steps": 30,
    "epochs": None,
    "batch_size": 4,
    "lr": 1e-3,
    "betas": [0.9, 0.999],
    "weight_decay": 0.0,
    "grad_clip": 1.0,
    "lr_schedule": "cosine",
    "warmup_fraction": 0.1,
    "ema": True,
    "ema_max_decay": 0.995,
    "checkpoints": 2,
    "seeds": [0],
}


def test_training_lowers_the_loss_saves_checkpoints_and_reloads(tiny_model, tiny_images, tmp_path):
    timesteps = evenly_spaced_timesteps(20, 1000)
    before = measure_loss(tiny_model, tiny_images, timesteps, [0], 64).mean()
    record = train(
        tiny_model,
        tiny_images,
        {**TRAIN, "steps": 150},
        seed=0,
        device=torch.device("cpu"),
        checkpoint_dir=tmp_path / "checkpoints",
    )
    after = measure_loss(tiny_model, tiny_images, timesteps, [0], 64).mean()
    assert after < before
    assert [c["step"] for c in record.checkpoints] == [75, 150]
    tiny_model.save_pretrained(tmp_path / "model")
    loaded = PixelDiffusion.from_pretrained(tmp_path / "model")
    np.testing.assert_allclose(
        measure_loss(loaded, tiny_images, timesteps, [0], 64),
        measure_loss(tiny_model, tiny_images, timesteps, [0], 64),
        rtol=1e-6,
    )
    assert json.loads((tmp_path / "checkpoints/step75/unet/config.json").read_text())["sample_size"] == 8
    # the saved folder is a diffusers DDPMPipeline too: one line opens it with the same weights
    pipeline = DDPMPipeline.from_pretrained(tmp_path / "model", local_files_only=True, use_safetensors=True)
    for name, tensor in tiny_model.unet.state_dict().items():
        assert torch.equal(pipeline.unet.state_dict()[name], tensor), name
    loaded_config, saved_config = (
        {k: v for k, v in config.items() if not k.startswith("_")}
        for config in (pipeline.scheduler.config, tiny_model.scheduler.config)
    )
    assert loaded_config == saved_config


R2 = np.sqrt(2) / 4  # cos(pi / 4) / 2


@pytest.mark.parametrize(
    ("schedule", "steps", "checkpoints", "lrs", "lr_sums"),
    [
        # constant 1e-3 over steps 1-6, checkpoints at steps 2, 4, 6: each stands for 2 steps
        (("constant", 0.0), 6, 3, [1e-3] * 3, [2e-3] * 3),
        # linear warm-up over 3 steps: 0, 1/3, 2/3 of 1e-3 (checkpoint at step 3), then 1e-3 x 3 (step 6)
        (("constant", 0.5), 6, 2, [2e-3 / 3, 1e-3], [1e-3, 3e-3]),
        # cosine over 4 steps: (1 + cos(pi k / 4)) / 2 of 1e-3 for k = 0..3: 1, 1/2 + R2, 1/2, 1/2 - R2
        (("cosine", 0.0), 4, 2, [1e-3 * (0.5 + R2), 1e-3 * (0.5 - R2)], [1e-3 * (1.5 + R2), 1e-3 * (1 - R2)]),
    ],
    ids=["constant", "warmup", "cosine"],
)
def test_checkpoints_record_the_lr_of_their_step_and_the_lr_sum_since_the_last(
    tiny_model, tiny_images, tmp_path, schedule, steps, checkpoints, lrs, lr_sums
):
    config = {**TRAIN, "lr_schedule": schedule[0], "warmup_fraction": schedule[1]}
    config.update(steps=steps, checkpoints=checkpoints, lr=1e-3)
    record = train(tiny_model, tiny_images, config, 0, torch.device("cpu"), checkpoint_dir=tmp_path)
    np.testing.assert_allclose([c["lr"] for c in record.checkpoints], lrs, rtol=1e-12)
    np.testing.assert_allclose([c["lr_sum"] for c in record.checkpoints], lr_sums, rtol=1e-12)


def test_same_seed_same_model(tiny_images):
    from diffattr.models import build_scheduler, build_unet
    from tests.conftest import TINY_MODEL

    losses = []
    for draw in range(2):
        torch.manual_seed(draw)  # the global RNG state must not matter
        model = PixelDiffusion(
            build_unet(TINY_MODEL, 8, 1, seed=4),
            build_scheduler({"num_train_timesteps": 1000, "beta_schedule": "linear"}),
        )
        train(model, tiny_images, TRAIN, seed=4, device=torch.device("cpu"))
        losses.append(measure_loss(model, tiny_images, np.array([10, 500]), [0, 1], 64))
    np.testing.assert_array_equal(losses[0], losses[1])


def test_sampling_gives_each_image_its_own_seed(tiny_model):
    seeds = np.array([11, 12, 13])
    together = ddim_sample(tiny_model, seeds, 5, 0.0, batch_size=3)
    apart = np.concatenate([ddim_sample(tiny_model, seeds[i : i + 1], 5, 0.0, 1) for i in range(3)])
    assert together.dtype == np.uint8 and together.shape == (3, 1, 8, 8)
    assert np.abs(together.astype(int) - apart.astype(int)).max() <= 1


def test_step_and_checkpoint_arithmetic():
    assert total_steps({"steps": None, "epochs": 200, "batch_size": 128}, 5000) == 200 * 40
    assert checkpoint_steps(100, 4) == [25, 50, 75, 100] and checkpoint_steps(100, 0) == []
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.parametrize(
    "overlay, channels",
    [
        ({}, 1),
        (
            {
                "block_out_channels": [8, 16, 16],
                "layers_per_block": 2,
                "down_block_types": ["DownBlock2D"] * 3,
                "up_block_types": ["UpBlock2D"] * 3,
            },
            3,
        ),
        (
            {
                "block_out_channels": [16, 32, 32],
                "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
                "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
                "resnet_time_scale_shift": "scale_shift",
            },
            3,
        ),
        ({"attention_head_dim": 16, "down_block_types": ["AttnDownBlock2D"] * 2}, 1),
        (
            {
                "attention_head_dim": None,
                "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
                "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
                "flip_sin_to_cos": False,
                "freq_shift": 1,
                "downsample_padding": 0,
                "norm_eps": 1e-6,
            },
            3,
        ),
    ],
    ids=["demo", "three-levels", "attention-scale-shift", "attention-first", "one-head-ddpm-embedding"],
)
def test_preflight_counts_the_unet_parameters_diffusers_builds(overlay, channels):
    """The pre-flight's count (no diffusers import when the workflow is parsed) is the built model's."""
    from diffattr.config import validate
    from diffattr.models import build_unet
    from diffattr.preflight import unet_parameters

    model = validate({"model": overlay})["model"]
    built = build_unet(model, 8, channels)
    assert unet_parameters(model, channels) == sum(p.numel() for p in built.parameters())


def test_ddpm_timestep_embedding_keys_reach_the_unet():
    """flip_sin_to_cos False and freq_shift 1 give the original DDPM embedding [sin(t w_i), cos(t w_i)] with
    w_i = 10000^(-i / (d/2 - 1)); the defaults give diffusers' [cos, sin] with w_i = 10000^(-i / (d/2));
    downsample_padding and norm_eps reach their layers."""
    from diffattr.config import validate
    from diffattr.models import build_unet

    def embedding(t: torch.Tensor, half: int, shift: int, cos_first: bool) -> torch.Tensor:
        w = torch.tensor([10000.0 ** (-i / (half - shift)) for i in range(half)])
        sin, cos = torch.sin(t[:, None] * w), torch.cos(t[:, None] * w)
        return torch.cat([cos, sin] if cos_first else [sin, cos], dim=1)

    t = torch.tensor([0.0, 7.0, 999.0])  # tolerance below: float32 phases at t = 999
    overlay = {"flip_sin_to_cos": False, "freq_shift": 1, "downsample_padding": 0, "norm_eps": 1e-6}
    ddpm = build_unet(validate({"model": overlay})["model"], 8, 1)
    half = ddpm.config.block_out_channels[0] // 2
    torch.testing.assert_close(ddpm.time_proj(t), embedding(t, half, 1, False), rtol=0, atol=1e-4)
    assert ddpm.down_blocks[0].downsamplers[0].padding == 0
    assert {m.eps for m in ddpm.modules() if isinstance(m, torch.nn.GroupNorm)} == {1e-6}
    default = build_unet(validate({"model": {}})["model"], 8, 1)
    torch.testing.assert_close(default.time_proj(t), embedding(t, half, 0, True), rtol=0, atol=1e-4)
    assert default.down_blocks[0].downsamplers[0].padding == 1


def test_antithetic_timesteps_are_draws_followed_by_their_mirrors():
    """Lu et al.'s loop: n // 2 + 1 draws d, then T-1-d, the first n kept; uniform is plain randint."""
    for n in (1, 2, 7, 128):
        got = draw_timesteps(n, 1000, torch.Generator().manual_seed(n), "antithetic").tolist()
        drawn = torch.randint(0, 1000, (n // 2 + 1,), generator=torch.Generator().manual_seed(n)).tolist()
        assert got == [drawn[i] if i < len(drawn) else 999 - drawn[i - len(drawn)] for i in range(n)]
    got = draw_timesteps(5, 1000, torch.Generator().manual_seed(3), "uniform")
    assert torch.equal(got, torch.randint(0, 1000, (5,), generator=torch.Generator().manual_seed(3)))

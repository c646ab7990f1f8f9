"""Pruning never breaks a model: every preset's UNet, pruned, runs, trains and round-trips through safe files;
a model folder carrying a pickle payload is refused without ever unpickling it."""

import json
import os
import pickle
import re
import subprocess
import sys

import pytest
import torch
import yaml

from diffattr.architecture import ARCHITECTURE, WEIGHTS
from diffattr.config import validate
from diffattr.errors import InputError
from diffattr.models import PixelDiffusion, build_scheduler, build_unet
from diffattr.pruning import prunable_channels, prune_unet
from tests.conftest import TINY_MODEL
from tests.workflow_helpers import ROOT, layered_config

# Channels and image size of each data source (image folders and latents: see preset_architectures).
SHAPES = {"digits": (1, 8), "cifar10": (3, 32), "cifar100": (3, 32)}


def preset_architectures() -> dict[str, tuple[dict, int, int]]:
    """Each distinct UNet (model config, channels, size) of config.yaml and the presets, by its users."""
    default = yaml.safe_load((ROOT / "config.yaml").read_text())
    found: dict[str, tuple[dict, int, int]] = {}
    names: dict[str, list[str]] = {}
    for path in [ROOT / "config.yaml", *sorted((ROOT / "experiments").glob("*.yaml"))]:
        try:
            config = validate(default if path.name == "config.yaml" else layered_config(path))
        except InputError as err:  # tests/test_config.py reports it; here the preset has no UNet to prune
            INVALID[path.stem] = str(err)
            continue
        branches = []
        if config["lds"]["enabled"]:
            branches.append(("model", config["model"], config["data"]))
        if config["shapley"]["enabled"]:
            model = config["shapley"].get("model") or config["model"]
            branches.append(("shapley.model", model, config["shapley"].get("data") or config["data"]))
        for key, model, data in branches:
            family = model.get("family", "pixel")
            if family == "lora":  # LoRA adapters are pruned by rank, not channels
                continue
            if family == "latent":  # the UNet's channels do not depend on the latent shape
                channels, size = 4, 16
            elif data["source"] == "image_folder":  # channels do not depend on the size: at most 32
                channels, size = 3, min(32, data["image_folder"]["image_size"])
            else:
                channels, size = SHAPES[data["source"]]
            arch = (model, channels, size)
            ident = json.dumps(arch, sort_keys=True)
            found[ident] = arch
            names.setdefault(ident, []).append(f"{path.stem}:{key}")
    return {"+".join(names[i]): arch for i, arch in found.items()}


INVALID: dict[str, str] = {}
ARCHITECTURES = preset_architectures()


@pytest.mark.parametrize("preset", sorted(INVALID))
def test_presets_that_do_not_validate_are_not_pruned_here(preset):
    pytest.skip(f"{preset} does not validate (tests/test_config.py fails on it): {INVALID[preset]}")


@pytest.mark.parametrize("ratio", [0.3, 0.5])
@pytest.mark.parametrize(
    "name", list(ARCHITECTURES), ids=[n.split("+")[0] + f"+{n.count('+')}" for n in ARCHITECTURES]
)
def test_every_preset_unet_pruned_runs_trains_and_round_trips(name, ratio, tmp_path):
    model_config, channels, size = ARCHITECTURES[name]
    unet = build_unet(model_config, sample_size=size, channels=channels)
    before = prunable_channels(unet)
    record = prune_unet(unet, ratio)
    assert record.channels_before == before and record.channels_after == prunable_channels(unet)
    assert record.removed_fraction == pytest.approx(ratio, abs=0.03)  # the blocks GroupNorm allows
    assert record.parameters_after < record.parameters_before
    for module in unet.modules():
        if isinstance(module, torch.nn.GroupNorm):
            assert module.num_channels % module.num_groups == 0
    x, t = torch.randn(1, channels, size, size), torch.tensor([500])
    out = unet(x, t).sample
    assert out.shape == x.shape
    out.square().mean().backward()
    assert all(p.grad is not None for p in unet.parameters())

    scheduler = build_scheduler({"num_train_timesteps": 1000, "beta_schedule": "linear"})
    PixelDiffusion(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pruned")
    saved = json.loads((tmp_path / "pruned" / "unet" / ARCHITECTURE).read_text())
    assert saved["layers"]["conv_in"]["out_channels"] == unet.conv_in.out_channels
    loaded = PixelDiffusion.from_pretrained(tmp_path / "pruned")
    unet.eval(), loaded.unet.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.unet(x, t).sample, unet(x, t).sample, rtol=0, atol=0)


def test_exact_ratio_prunes_every_layer_uniformly_and_the_ratio_is_checked():
    config = {**TINY_MODEL, "block_out_channels": [16, 32], "resnet_time_scale_shift": "scale_shift"}
    unet = build_unet(config, sample_size=8, channels=1)
    widths = {n: m.out_channels for n, m in unet.named_modules() if isinstance(m, torch.nn.Conv2d)}
    record = prune_unet(unet, 0.5)
    assert record.removed_fraction == 0.5 and record.groups_left_whole == 0
    for n, m in unet.named_modules():
        if isinstance(m, torch.nn.Conv2d) and n != "conv_out":
            assert m.out_channels == widths[n] // 2, n
    with pytest.raises(InputError, match="shapley.pruning.ratio"):
        prune_unet(build_unet(TINY_MODEL, sample_size=8, channels=1), 1.0)


class Payload:
    """Unpickling this creates a marker directory: proof that a loader ran code from a model file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def saved_pruned(tmp_path):
    unet = build_unet(TINY_MODEL, sample_size=8, channels=1)
    prune_unet(unet, 0.5)
    scheduler = build_scheduler({"num_train_timesteps": 1000, "beta_schedule": "linear"})
    PixelDiffusion(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def _swap_weights(folder, marker):  # the safetensors file replaced by a pickle
    (folder / "unet" / WEIGHTS).write_bytes(pickle.dumps(Payload(marker)))


def _pickled_only(folder, marker):  # a diffusers folder whose weights are a pickled .bin
    (folder / "unet" / WEIGHTS).unlink()
    (folder / "unet" / ARCHITECTURE).unlink()
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))


def _old_format(folder, marker):  # the former whole-module pickle of a pruned UNet
    for f in (folder / "unet").iterdir():
        f.unlink()
    (folder / "unet" / "pruned_unet.pt").write_bytes(pickle.dumps(Payload(marker)))


@pytest.mark.parametrize("tamper", [_swap_weights, _pickled_only, _old_format])
def test_tampered_model_file_is_refused_and_its_payload_never_runs(saved_pruned, tmp_path, tamper):
    marker = tmp_path / "payload-ran"
    tamper(saved_pruned, marker)
    with pytest.raises(InputError) as err:
        PixelDiffusion.from_pretrained(saved_pruned)
    assert "\n" not in str(err.value) and "unet" in str(err.value)
    assert not marker.exists()


def test_a_job_loading_a_tampered_folder_exits_with_one_line(saved_pruned, tmp_path):
    marker = tmp_path / "payload-ran"
    _swap_weights(saved_pruned, marker)
    code = (
        "import sys\nfrom diffattr.runtime import job\nfrom diffattr.models import PixelDiffusion\n"
        f"with job({str(tmp_path / 'job.log')!r}):\n    PixelDiffusion.from_pretrained(sys.argv[1])\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(saved_pruned)], capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0 and run.stderr.startswith("diffattr: ")
    assert WEIGHTS in run.stderr and "Traceback" not in run.stderr
    assert not marker.exists()


def test_no_pickled_model_files_anywhere_in_the_repository():
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")]:
        text = path.read_text()
        assert "weights_only=False" not in text, path
        for line in text.splitlines():  # torch.save only of a state dict (tensors), never of a module
            assert "torch.save(" not in line or "state_dict()" in line, (path, line)


def readme_parameter_counts() -> dict[str, str]:
    """Preset -> parameters of its model, from README's table of presets ("| `name` | ... | 38.3M |")."""
    rows = re.findall(r"^\| `([\w-]+)` \|.*\| ([\d.]+M) \|$", (ROOT / "README.md").read_text(), re.MULTILINE)
    return dict(rows)


def test_every_preset_unet_has_the_parameter_count_readme_states():
    stated = readme_parameter_counts()
    for name, (model_config, channels, size) in ARCHITECTURES.items():
        count = sum(
            p.numel() for p in build_unet(model_config, sample_size=size, channels=channels).parameters()
        )
        for user in name.split("+"):
            preset = user.split(":")[0]
            if preset in ("config", "demo-projections"):
                continue
            assert preset in stated, f"README's presets table has no row for {preset}"
            assert stated[preset] == f"{count / 1e6:.1f}M", (preset, count)

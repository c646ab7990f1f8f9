"""The LoRA family: Stable Diffusion (UNet2DConditionModel + CLIP text encoder + AutoencoderKL, from a
local snapshot in diffusers layout, `model.pretrained`) with LoRA adapters from peft on the UNet's
attention projections. Only the adapters train; only they are featurized and pruned (by rank pairs).

A saved model is the adapters alone, in the diffusers LoRA file layout (pytorch_lora_weights.safetensors
with "unet." keys and the LoraConfig as metadata) that `StableDiffusionPipeline.load_lora_weights`
reads, beside scheduler/ and family.json naming the snapshot; a user's own LoRA in that layout loads too.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from peft import LoraConfig
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from transformers import CLIPTextModel, CLIPTokenizer

from diffattr.errors import InputError
from diffattr.families.base import DiffusionModel, read_family
from diffattr.families.latent import load_autoencoder, vae_decode, vae_encode
from diffattr.models import build_scheduler

ADAPTER = "default"
SNAPSHOT_PARTS = ("unet", "text_encoder", "tokenizer", "vae")


@dataclass
class Snapshot:
    """The frozen components of a Stable Diffusion snapshot."""

    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    vae: AutoencoderKL
    scheduler: DDPMScheduler | None


def load_snapshot(path: str | Path | None, key: str = "model.pretrained") -> Snapshot:
    """Load unet/, text_encoder/, tokenizer/, vae/ (and scheduler/, if present) from a local folder."""
    if not path:
        raise InputError(
            f"config key '{key}': required (a local Stable Diffusion snapshot in diffusers layout)"
        )
    root = Path(path)
    missing = [part for part in SNAPSHOT_PARTS if not (root / part).is_dir()]
    if missing:
        raise InputError(f"config key '{key}': {root} is not a diffusers snapshot (no {', '.join(missing)}/)")
    unet = UNet2DConditionModel.from_pretrained(root / "unet", local_files_only=True)
    scheduler = None
    if (root / "scheduler" / "scheduler_config.json").is_file():
        scheduler = DDPMScheduler.from_pretrained(root / "scheduler", local_files_only=True)
        if scheduler.config.prediction_type != "epsilon":
            raise InputError(
                f"config key '{key}': the snapshot predicts {scheduler.config.prediction_type!r}; "
                "only epsilon-prediction models are supported"
            )
    return Snapshot(
        unet=unet.eval().requires_grad_(False),
        text_encoder=CLIPTextModel.from_pretrained(root / "text_encoder", local_files_only=True)
        .eval()
        .requires_grad_(False),
        tokenizer=CLIPTokenizer.from_pretrained(root / "tokenizer", local_files_only=True),
        vae=load_autoencoder(root, key, subfolders=("vae",)),
        scheduler=scheduler,
    )


def lora_config(lora: dict) -> LoraConfig:
    """peft's LoraConfig from the config's `model.lora` section."""
    return LoraConfig(
        r=lora["rank"],
        lora_alpha=lora["alpha"],
        target_modules=list(lora["targets"]),
        init_lora_weights="gaussian",
    )


def lora_layers(unet: torch.nn.Module) -> dict[str, LoraLayer]:
    """Every module of the UNet carrying the adapter, by name."""
    return {n: m for n, m in unet.named_modules() if isinstance(m, LoraLayer) and ADAPTER in m.lora_A}


@dataclass
class LoraDiffusion(DiffusionModel):
    """A frozen Stable Diffusion snapshot with trainable LoRA adapters on its UNet."""

    family: ClassVar[str] = "lora"
    unet: UNet2DConditionModel
    scheduler: DDPMScheduler
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    pretrained: str
    image_size: int
    prompt_list: list[str]
    _embeddings: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        model_config: dict,
        scheduler_config: dict,
        image_shape: tuple[int, ...],
        seed: int,
        prompts: Sequence[str] | None = None,
    ) -> LoraDiffusion:
        """The snapshot of `model.pretrained` with fresh seeded adapters (B = 0: starts as the snapshot)."""
        parts = load_snapshot(model_config.get("pretrained"))
        if image_shape[0] != parts.vae.config.in_channels:
            raise InputError(
                f"config key 'model.pretrained': its autoencoder takes {parts.vae.config.in_channels}"
                f"-channel images, the data has {image_shape[0]} channels"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            parts.unet.add_adapter(lora_config(model_config["lora"]), adapter_name=ADAPTER)
        return cls(
            unet=parts.unet,
            scheduler=parts.scheduler or build_scheduler(scheduler_config),
            vae=parts.vae,
            text_encoder=parts.text_encoder,
            tokenizer=parts.tokenizer,
            pretrained=str(Path(model_config["pretrained"]).resolve()),
            image_size=int(image_shape[-1]),
            prompt_list=list(prompts) if prompts else [""],
        )

    def modules(self) -> list[torch.nn.Module]:
        return [self.unet, self.vae, self.text_encoder]

    def to(self, device: torch.device | str) -> LoraDiffusion:
        self._embeddings.clear()
        super().to(device)
        return self

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return vae_encode(self.vae, images)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return vae_decode(self.vae, x)

    @torch.no_grad()
    def condition(self, captions: Sequence[str] | None) -> torch.Tensor:
        """CLIP text embeddings (N, L, D) of the captions, each caption encoded once per model."""
        captions = [""] if captions is None else list(captions)
        new = [c for c in dict.fromkeys(captions) if c not in self._embeddings]
        if new:
            ids = self.tokenizer(
                new,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            hidden = self.text_encoder(ids.to(self.text_encoder.device))[0]
            self._embeddings.update(zip(new, hidden, strict=True))
        return torch.stack([self._embeddings[c] for c in captions])

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """eps_theta(x_t, t, text embeddings); no conditioning means the empty prompt."""
        if cond is None:
            cond = self.condition([""])
        if len(cond) == 1 and len(x_t) > 1:
            cond = cond.expand(len(x_t), *cond.shape[1:])
        return self.unet(x_t, t, encoder_hidden_states=cond).sample

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        size = self.image_size // factor
        return (self.unet.config.in_channels, size, size)

    @property
    def prompts(self) -> list[str]:
        return self.prompt_list

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for n, p in self.unet.named_parameters() if ".lora_" in n]

    def copy(self) -> LoraDiffusion:
        """Independent adapters (the UNet is copied with them); the text encoder and VAE are shared."""
        return LoraDiffusion(
            copy.deepcopy(self.unet),
            self.scheduler,
            self.vae,
            self.text_encoder,
            self.tokenizer,
            self.pretrained,
            self.image_size,
            list(self.prompt_list),
        )

    def prune(self, ratio: float, scope: str = "global") -> dict:
        """Remove rank pairs (A row i, B column i) of the adapters: `ratio` of the LoRA parameters across
        all adapters by Lu et al.'s importance (scope global, non-uniform ranks: `global_rank_pairs`), or
        `ratio` of each adapter's pairs by norm(A_i) norm(B_i) (scope per_adapter, one rank everywhere).

        Each adapter is rebuilt at its kept rank with alpha scaled by kept / rank, so lora_alpha / r is
        unchanged and the pruned model equals the original with the removed pairs set to zero.
        """
        if not 0 <= ratio < 1:
            raise InputError(
                f"config key 'shapley.pruning.ratio': {ratio} is not in [0, 1) (fraction removed)"
            )
        if scope not in PRUNING_SCOPES:
            raise InputError(
                f"config key 'shapley.pruning.lora_scope': {scope!r} is not one of {PRUNING_SCOPES}"
            )
        config, layers = self.unet.peft_config[ADAPTER], lora_layers(self.unet)
        weights = {
            name: (layer.lora_A[ADAPTER].weight.detach(), layer.lora_B[ADAPTER].weight.detach())
            for name, layer in layers.items()
        }
        kept = (
            global_rank_pairs(weights, ratio) if scope == "global" else per_adapter_rank_pairs(weights, ratio)
        )
        before = sum(p.numel() for p in self.trainable_parameters())
        state = {}
        for name, (a, b) in weights.items():
            state[f"{name}.lora_A.weight"] = a[kept[name]].clone()
            state[f"{name}.lora_B.weight"] = b[:, kept[name]].clone()
        ranks = {name: len(idx) for name, idx in kept.items()}
        alphas = {name: layers[name].scaling[ADAPTER] * k for name, k in ranks.items()}  # alpha / r kept
        self.unet.delete_adapters(ADAPTER)
        pruned = LoraConfig(
            r=config.r,
            lora_alpha=config.lora_alpha,
            rank_pattern=ranks,
            alpha_pattern=alphas,
            target_modules=sorted(config.target_modules),
            init_lora_weights="gaussian",
        )
        self.unet.add_adapter(pruned, adapter_name=ADAPTER)
        set_peft_model_state_dict(self.unet, state, adapter_name=ADAPTER)
        after = sum(p.numel() for p in self.trainable_parameters())
        return {
            "kind": "lora_rank",
            "scope": scope,
            "ratio": ratio,
            "rank_before": config.r,
            "ranks_after": ranks,
            "removed_fraction": 1 - after / before,
            "parameters_before": before,
            "parameters_after": after,
            "meaning": "ratio = requested and removed_fraction = achieved share of LoRA parameters REMOVED",
        }

    def save_pretrained(self, path: str | Path) -> None:
        """The adapters as a diffusers LoRA file, scheduler/, and family.json naming the snapshot."""
        path = Path(path)
        StableDiffusionLoraLoaderMixin.save_lora_weights(
            path,
            unet_lora_layers=get_peft_model_state_dict(self.unet, adapter_name=ADAPTER),
            unet_lora_adapter_metadata=self.unet.peft_config[ADAPTER].to_dict(),
        )
        self.scheduler.save_pretrained(path / "scheduler")
        self.write_family(
            path, pretrained=self.pretrained, image_size=self.image_size, prompts=self.prompt_list
        )

    @classmethod
    def from_pretrained(cls, path: str | Path) -> LoraDiffusion:
        """The snapshot named in family.json with the LoRA file of `path` loaded into its UNet."""
        path = Path(path)
        info = read_family(path)
        parts = load_snapshot(info["pretrained"])
        load_lora(parts.unet, path)
        return cls(
            unet=parts.unet,
            scheduler=DDPMScheduler.from_pretrained(path / "scheduler", local_files_only=True),
            vae=parts.vae,
            text_encoder=parts.text_encoder,
            tokenizer=parts.tokenizer,
            pretrained=info["pretrained"],
            image_size=int(info["image_size"]),
            prompt_list=list(info["prompts"]),
        )


def load_lora(unet: UNet2DConditionModel, path: str | Path) -> None:
    """Load a LoRA file in diffusers / kohya layout (as written by `save_lora_weights`) as the adapter."""
    try:
        state, alphas, metadata = StableDiffusionLoraLoaderMixin.lora_state_dict(
            str(path), local_files_only=True, return_lora_metadata=True
        )
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: no readable LoRA weights ({exc})") from exc
    StableDiffusionLoraLoaderMixin.load_lora_into_unet(
        state, alphas, unet, adapter_name=ADAPTER, metadata=metadata
    )
    for name, p in unet.named_parameters():  # the snapshot stays frozen, the adapters can train
        p.requires_grad_(".lora_" in name)


PRUNING_SCOPES = ("global", "per_adapter")
Pairs = dict[str, tuple[torch.Tensor, torch.Tensor]]


def rank_pair_importance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Lu et al.'s importance of an adapter's rank pairs: torch-pruning's group magnitude importance of
    the coupled A row and B column (norm(A_i)^2 + norm(B_i)^2, as MagnitudeImportance(p=2) sums them),
    divided by the adapter's mean (its 'mean' normaliser), so pairs of different adapters compare."""
    score = a.pow(2).sum(1) + b.pow(2).sum(0)
    return score / score.mean()


def global_rank_pairs(weights: Pairs, ratio: float) -> dict[str, list[int]]:
    """The rank pairs each adapter keeps (name -> sorted indices) when pairs are removed across all
    adapters, least important first (`rank_pair_importance`; ties by adapter order, then index), until
    at most (1 - ratio) of the LoRA parameters remain (Lu et al.'s prune_lora.py). A pair counts its
    own parameters (A row + B column); each adapter's most important pair is never removed, so every
    adapter keeps rank 1 or more. `weights` maps an adapter's name to its (A (r, in), B (out, r))."""
    pairs = []
    for name, (a, b) in weights.items():
        score = rank_pair_importance(a, b)
        top = int(score.argmax())
        pairs += [(float(score[i]), name, i, a.shape[1] + b.shape[0], i == top) for i in range(len(score))]
    remaining = sum(size for *_, size, _ in pairs)
    target = (1 - ratio) * remaining
    removed = set()
    for _, name, i, size, protected in sorted(pairs, key=lambda pair: pair[0]):
        if remaining <= target:
            break
        if not protected:
            removed.add((name, i))
            remaining -= size
    return {name: [i for i in range(len(a)) if (name, i) not in removed] for name, (a, _) in weights.items()}


def per_adapter_rank_pairs(weights: Pairs, ratio: float) -> dict[str, list[int]]:
    """The top round((1 - ratio) r) pairs (at least 1) of each adapter by norm(A_i) norm(B_i)."""
    kept = {}
    for name, (a, b) in weights.items():
        keep = max(1, round((1 - ratio) * len(a)))
        kept[name] = (a.norm(dim=1) * b.norm(dim=0)).topk(keep).indices.sort().values.tolist()
    return kept

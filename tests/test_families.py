"""The latent and LoRA model families: encoding, training only what should train, per-sample LoRA
gradients against a plain loop, rank pruning, diffusers-format save/load, prompts; tiny local models."""

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.autoencoders.vq_model import VQModel

from diffattr.data import fill_captions
from diffattr.errors import InputError
from diffattr.families import build_model, load_model
from diffattr.families.lora import global_rank_pairs, load_snapshot, lora_layers, rank_pair_importance
from diffattr.gradients import FeaturizerSpec, TimestepAveragedGradient, featurize, featurize_at_draws
from diffattr.models import build_scheduler
from diffattr.outputs import OUTPUT_FUNCTIONS, evenly_spaced_timesteps, fixed_noise, measure_loss
from diffattr.sampling import ddim_sample, ddim_trajectory, initial_noise, sample_prompts
from diffattr.training import train
from diffattr.training_draws import TrainingDraws
from tests.conftest import TINY_MODEL
from tests.test_models import TRAIN
from tests.tiny_sd import LORA, tiny_autoencoder, tiny_stable_diffusion, tiny_vq_autoencoder

SCHEDULER = {"num_train_timesteps": 1000, "beta_schedule": "linear"}
PROMPTS = ["a cubism painting by ana", "a baroque painting by bo"]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    return tiny_stable_diffusion(tmp_path_factory.mktemp("sd"))


@pytest.fixture
def lora_model(snapshot):
    model = build_model(
        {"family": "lora", "pretrained": str(snapshot), "lora": LORA}, SCHEDULER, (3, 8, 8), 0, PROMPTS
    )
    with torch.no_grad():  # adapters away from their B = 0 start, so that every path is exercised
        for p in model.trainable_parameters():
            p.normal_(0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
    return model


@pytest.fixture
def rgb_images():
    return torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1


def test_latent_family_diffuses_scaled_autoencoder_latents_and_round_trips(tmp_path):
    vae_path = tiny_autoencoder(tmp_path / "vae", channels=1)
    model = build_model({**TINY_MODEL, "family": "latent", "vae": str(vae_path)}, SCHEDULER, (1, 8, 8), 0)
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    vae = AutoencoderKL.from_pretrained(vae_path)
    expected = vae.encode(images).latent_dist.mode() * vae.config.scaling_factor
    torch.testing.assert_close(model.encode(images), expected)
    assert model.latent_shape == (4, 4, 4) and model.unet.config.in_channels == 4
    before = [p.detach().clone() for p in model.vae.parameters()]
    train(model, images, {**TRAIN, "steps": 4, "checkpoints": 1}, seed=0, device=torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(before, model.vae.parameters(), strict=True))
    model.save_pretrained(tmp_path / "model")
    again = load_model(tmp_path / "model")
    timesteps = evenly_spaced_timesteps(3, 1000)
    np.testing.assert_allclose(
        measure_loss(model, images, timesteps, [0], 4), measure_loss(again, images, timesteps, [0], 4)
    )
    samples = ddim_sample(again, np.array([5, 6, 5]), num_inference_steps=3, eta=0.0, batch_size=2)
    assert samples.shape == (3, 1, 8, 8) and samples.dtype == np.uint8
    np.testing.assert_array_equal(samples[0], samples[2])


def test_latent_flips_mirror_the_image_before_encoding_and_antithetic_timesteps_pair_up(tmp_path):
    """A latent family's random flip mirrors the image, then encodes it (the encoder does not commute with
    mirroring): step 2's logged loss is recomputed from its saved draws with the autoencoder's own latents
    of the mirrored images, and TracIn's train features encode the same mirrored images. Antithetic
    timesteps: of a batch of 6, two pairs sum to T - 1."""
    vae_path = tiny_autoencoder(tmp_path / "vae", channels=1)
    model = build_model({**TINY_MODEL, "family": "latent", "vae": str(vae_path)}, SCHEDULER, (1, 8, 8), 0)
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    config = {**TRAIN, "steps": 2, "batch_size": 6, "ema": False, "checkpoints": 2, "random_flip": True}
    config |= {"timestep_sampling": "antithetic", "lr_schedule": "constant", "warmup_fraction": 0.0}
    record = train(
        model, images, config, seed=0, device=torch.device("cpu"), checkpoint_dir=tmp_path / "ckpt"
    )
    before, draws = load_model(tmp_path / "ckpt" / "step1"), TrainingDraws.load(tmp_path / "ckpt" / "step2")
    assert draws.flip.any() and not draws.flip.all()
    vae = AutoencoderKL.from_pretrained(vae_path)
    mirrored = torch.where(draws.flip[:, None, None, None], images.flip(-1), images)
    with torch.no_grad():
        x0 = vae.encode(mirrored).latent_dist.mode() * vae.config.scaling_factor
        plain = vae.encode(images).latent_dist.mode() * vae.config.scaling_factor
        assert not torch.allclose(x0, torch.where(draws.flip[:, None, None, None], plain.flip(-1), plain))
        x_t = before.scheduler.add_noise(x0, draws.noise, draws.t)
        loss = torch.nn.functional.mse_loss(before.unet(x_t, draws.t).sample, draws.noise)
    assert float(loss) == pytest.approx(dict(record.losses)[2], rel=1e-5)
    t = draws.t.tolist()
    assert sum(t[i] + t[j] == 999 for i in range(6) for j in range(i + 1, 6)) >= 2
    encoded, encode = [], before.encode
    before.encode = lambda x: encoded.append(x) or encode(x)
    featurize_at_draws(
        before, images, draws, FeaturizerSpec("loss", timesteps=1, dim=4, projection="gaussian", seed=0)
    )
    torch.testing.assert_close(torch.cat(encoded), mirrored)


def test_missing_weights_are_one_line_errors_naming_the_key(tmp_path):
    with pytest.raises(InputError, match="config key 'model.vae'"):
        build_model({**TINY_MODEL, "family": "latent", "vae": str(tmp_path / "none")}, SCHEDULER, (1, 8, 8))
    with pytest.raises(InputError, match="config key 'model.pretrained'"):
        build_model({"family": "lora", "pretrained": str(tmp_path), "lora": LORA}, SCHEDULER, (3, 8, 8))
    with pytest.raises(InputError, match="config key 'model.family'"):
        build_model({"family": "gan"}, SCHEDULER, (3, 8, 8))


def test_lora_training_changes_only_the_adapters(lora_model, rgb_images):
    before = {
        f"{i}.{n}": p.detach().clone()
        for i, m in enumerate(lora_model.modules())
        for n, p in m.named_parameters()
    }
    captions = np.array([PROMPTS[i % 2] for i in range(len(rgb_images))], dtype=object)
    train(
        lora_model,
        rgb_images,
        {**TRAIN, "steps": 3, "ema": False},
        seed=0,
        device=torch.device("cpu"),
        captions=captions,
    )
    after = {f"{i}.{n}": p for i, m in enumerate(lora_model.modules()) for n, p in m.named_parameters()}
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    adapters = {n for n in before if ".lora_" in n}
    assert adapters and changed == adapters


def plain_loop_lora_gradient(model, image, caption, spec):
    """One forward/backward per timestep through the conditional UNet, averaged over timesteps."""
    params = model.trainable_parameters()
    x0 = model.encode(image[None])
    cond = model.condition([caption])
    total = [torch.zeros_like(p) for p in params]
    for t in evenly_spaced_timesteps(spec.timesteps, 1000):
        noise = fixed_noise(0, t, model.latent_shape)[None]
        tt = torch.tensor([int(t)])
        pred = model.unet(model.scheduler.add_noise(x0, noise, tt), tt, encoder_hidden_states=cond).sample
        value = OUTPUT_FUNCTIONS[spec.output](pred, noise, tt, model.scheduler.alphas_cumprod)[0]
        grads = torch.autograd.grad(value, params)
        total = [a + g / spec.timesteps for a, g in zip(total, grads, strict=True)]
    return torch.cat([g.reshape(-1) for g in total])


@pytest.mark.parametrize("output", ["loss", "squared_norm"])
def test_per_sample_lora_gradients_equal_a_plain_loop(lora_model, rgb_images, output):
    spec = FeaturizerSpec(output, timesteps=5, dim=8, projection="gaussian", seed=0)
    gradient = TimestepAveragedGradient(lora_model, spec, timestep_batch=2)
    lora_count = sum(p.numel() for p in lora_model.trainable_parameters())
    assert lora_count < sum(p.numel() for p in lora_model.unet.parameters()) / 5
    for image, caption in zip(rgb_images[:2], PROMPTS, strict=True):
        fast = gradient(image, caption)
        assert fast.shape == (lora_count,)
        torch.testing.assert_close(
            fast, plain_loop_lora_gradient(lora_model, image, caption, spec), rtol=1e-4, atol=1e-6
        )
    features = featurize(lora_model, rgb_images[:2], spec, batch_size=2, captions=PROMPTS)
    assert features.shape == (2, 8) and np.isfinite(features).all()


def test_lora_per_adapter_rank_pruning_keeps_each_adapters_largest_pairs(lora_model, rgb_images):
    x = lora_model.encode(rgb_images)
    t = torch.tensor([10, 200, 500, 900])
    cond = lora_model.condition([PROMPTS[0]] * 4)
    with torch.no_grad():  # the expected model: the same adapters with the weakest half of the pairs zeroed
        reference = lora_model.copy()
        for layer in lora_layers(reference.unet).values():
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            weakest = (a.norm(dim=1) * b.norm(dim=0)).argsort()[:2]
            a[weakest] = 0
        expected = reference.predict_noise(x, t, cond)
    record = lora_model.prune(0.5, scope="per_adapter")
    assert record["rank_before"] == 4 and set(record["ranks_after"].values()) == {2}
    assert record["removed_fraction"] == 0.5
    assert record["parameters_after"] == record["parameters_before"] // 2
    with torch.no_grad():
        torch.testing.assert_close(lora_model.predict_noise(x, t, cond), expected, rtol=1e-5, atol=1e-6)


def test_lora_pair_importance_is_torch_prunings_group_magnitude_as_the_authors_take_it():
    """Lu et al. score the pairs with torch-pruning's MagnitudeImportance on the group of the LoRA down
    layer's outputs (coupled to the up layer's inputs): the same numbers as rank_pair_importance."""
    import torch_pruning as tp

    torch.manual_seed(0)
    down, up = torch.nn.Linear(16, 3, bias=False), torch.nn.Linear(3, 8, bias=False)
    graph = tp.DependencyGraph().build_dependency(torch.nn.Sequential(down, up), torch.randn(1, 16))
    group = graph.get_pruning_group(down, tp.prune_linear_out_channels, idxs=[0, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(
            tp.importance.MagnitudeImportance()(group), rank_pair_importance(down.weight, up.weight)
        )


def brute_force_global_pruning(weights: dict, ratio: float) -> dict[str, list[int]]:
    """Every subset of the pairs tried: of those leaving each adapter a pair and at most 1 - ratio of the
    parameters, the one with the least important most important removed pair, then the fewest parameters
    left, then the most importance kept (everything under the threshold goes, each adapter's best stays)."""
    names, scores, sizes = [], [], []
    for name, (a, b) in weights.items():
        norms = a.pow(2).sum(1) + b.pow(2).sum(0)
        for i, score in enumerate((norms / norms.mean()).tolist()):
            names.append((name, i))
            scores.append(score)
            sizes.append(a.shape[1] + b.shape[0])
    scores, sizes = np.array(scores), np.array(sizes)
    removed = (np.arange(2 ** len(names))[:, None] >> np.arange(len(names))) & 1 == 1
    left = ((~removed) * sizes).sum(1)
    adapters = np.array([n for n, _ in names])
    feasible = (left <= (1 - ratio) * sizes.sum()) & np.all(
        [(~removed[:, adapters == a]).any(1) for a in weights], axis=0
    )
    worst = np.where(removed, scores, -np.inf).max(1)
    kept = ((~removed) * scores).sum(1)
    best = np.lexsort((-kept, left, worst))  # last key first
    choice = removed[next(i for i in best if feasible[i])]
    return {a: [i for (n, i), r in zip(names, choice, strict=True) if n == a and not r] for a in weights}


def test_global_lora_pruning_agrees_with_a_brute_force_and_zeroes_the_removed_pairs(
    snapshot, rgb_images, tmp_path
):
    """Lu et al.'s global rule on a tiny LoRA (4 adapters of rank 4 on the cross-attention keys, 24 and
    32 weights a pair): the kept pairs are the brute force's over all 2^16 subsets; ranks differ between
    adapters; at most half the parameters remain; the pruned model equals the unpruned one with the
    removed pairs zeroed."""
    lora = {"rank": 4, "alpha": 8, "targets": ["attn2.to_k"]}
    model = build_model(
        {"family": "lora", "pretrained": str(snapshot), "lora": lora}, SCHEDULER, (3, 8, 8), 0, PROMPTS
    )
    generator = torch.Generator().manual_seed(5)
    layers = lora_layers(model.unet)
    with torch.no_grad():  # adapters of different scales whose pairs' norms spread from not to 1000-fold
        for k, layer in enumerate(layers.values()):
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            a.normal_(0, 0.1 * (1 + k), generator=generator).mul_(torch.logspace(0, k, 4).view(4, 1))
            b.normal_(0, 0.1, generator=generator)
    weights = {
        n: (m.lora_A["default"].weight.detach().clone(), m.lora_B["default"].weight.detach().clone())
        for n, m in layers.items()
    }
    expected = brute_force_global_pruning(weights, 0.5)
    assert global_rank_pairs(weights, 0.5) == expected
    x, t = model.encode(rgb_images), torch.tensor([10, 200, 500, 900])
    cond = model.condition([PROMPTS[0]] * 4)
    with torch.no_grad():
        reference = model.copy()
        for name, layer in lora_layers(reference.unet).items():
            gone = [i for i in range(4) if i not in expected[name]]
            layer.lora_A["default"].weight[gone] = 0
        zeroed = reference.predict_noise(x, t, cond)
    record = model.prune(0.5)
    assert record["ranks_after"] == {name: len(kept) for name, kept in expected.items()}
    assert len(set(record["ranks_after"].values())) > 1
    assert record["parameters_after"] <= record["parameters_before"] / 2 < record["parameters_after"] + 32
    model.save_pretrained(tmp_path / "pruned")  # the ranks travel with the file
    with torch.no_grad():
        torch.testing.assert_close(model.predict_noise(x, t, cond), zeroed, rtol=1e-5, atol=1e-6)
        again = load_model(tmp_path / "pruned").predict_noise(x, t, cond)
        torch.testing.assert_close(again, zeroed, rtol=1e-5, atol=1e-6)


def test_lora_saves_in_the_diffusers_layout_a_pipeline_loads(lora_model, snapshot, rgb_images, tmp_path):
    from diffusers import StableDiffusionPipeline

    lora_model.prune(0.5)  # a rank the snapshot's config does not know: it must travel with the file
    lora_model.save_pretrained(tmp_path / "lora")
    again = load_model(tmp_path / "lora")
    parts = load_snapshot(snapshot)  # a fresh, adapter-free copy of the snapshot's components
    pipe = StableDiffusionPipeline(
        parts.vae,
        parts.text_encoder,
        parts.tokenizer,
        parts.unet,
        parts.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.load_lora_weights(tmp_path / "lora")
    x, t = lora_model.encode(rgb_images), torch.tensor([10, 200, 500, 900])
    cond = lora_model.condition(PROMPTS * 2)
    with torch.no_grad():
        ours = lora_model.predict_noise(x, t, cond)
        torch.testing.assert_close(again.predict_noise(x, t, cond), ours)
        torch.testing.assert_close(
            pipe.unet(x, t, encoder_hidden_states=cond).sample, ours, rtol=1e-5, atol=1e-6
        )
    assert again.prompts == PROMPTS
    trainable = {id(p) for p in again.trainable_parameters()}
    assert all(p.requires_grad == (id(p) in trainable) for p in again.unet.parameters())


def test_generation_cycles_through_the_prompts_with_a_seed_per_image(lora_model):
    assert list(sample_prompts(lora_model, 3)) == [PROMPTS[0], PROMPTS[1], PROMPTS[0]]
    together = ddim_sample(lora_model, np.array([7, 8, 7]), num_inference_steps=3, eta=0.0, batch_size=3)
    alone = ddim_sample(lora_model, np.array([7]), num_inference_steps=3, eta=0.0, batch_size=1)
    assert together.shape == (3, 3, 8, 8)
    np.testing.assert_array_equal(together[0], together[2])
    np.testing.assert_array_equal(together[0], alone[0])


def test_caption_template_fills_metadata_columns_and_names_the_key():
    table = pd.DataFrame(
        {"file": ["a.png", "b.png"], "artist": ["ana", "bo"], "style": ["cubism", "baroque"]}
    )
    assert list(fill_captions("a {style} painting by {artist}", table)) == PROMPTS
    with pytest.raises(InputError, match="config key 'data.image_folder.caption'"):
        fill_captions("a painting by {painter}", table)


def test_latent_family_over_a_vq_autoencoder_in_a_snapshot_folder(tmp_path):
    from diffusers.models.autoencoders.vq_model import VQModel

    torch.manual_seed(0)
    vq = VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        latent_channels=3,
        num_vq_embeddings=16,
        norm_num_groups=4,
        sample_size=8,
    )
    vq.save_pretrained(tmp_path / "ldm" / "vqvae")  # the layout of an LDM snapshot
    model = build_model(
        {**TINY_MODEL, "family": "latent", "vae": str(tmp_path / "ldm")}, SCHEDULER, (3, 8, 8), 0
    )
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    torch.testing.assert_close(model.encode(images), vq.encode(images).latents * vq.config.scaling_factor)
    assert model.latent_shape == (3, 4, 4)
    samples = ddim_sample(model, np.array([1, 2]), num_inference_steps=2, eta=0.0, batch_size=2)
    assert samples.shape == (2, 3, 8, 8)


def test_latent_family_takes_the_authors_scale_and_schedule_and_never_clips_latents(tmp_path):
    """Lu et al.'s LDM: unscaled VQ latents, scaled-linear betas 0.0015-0.0195, DDIM without clipping.
    With a denoiser that predicts no noise, DDIM's x_0 estimate is x_T / sqrt(abar_t) at every step,
    far outside [-1, 1]: the final latent must be exactly that, not clipped."""
    vae_path = tiny_vq_autoencoder(tmp_path / "ldm")
    authors = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.0015}
    authors |= {"beta_end": 0.0195, "clip_sample": False}
    config = {**TINY_MODEL, "family": "latent", "vae": str(vae_path), "latent_scale": 1}
    model = build_model(config, authors, (3, 16, 16), 0)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    vq = VQModel.from_pretrained(vae_path / "vqvae")
    torch.testing.assert_close(model.encode(images), vq.encode(images).latents)  # scale 1, not 0.18215
    betas = np.linspace(0.0015**0.5, 0.0195**0.5, 1000) ** 2
    np.testing.assert_allclose(model.scheduler.betas.numpy(), betas, rtol=1e-5)
    model.save_pretrained(tmp_path / "model")
    again = load_model(tmp_path / "model")
    assert again.latent_scale == 1 and again.scheduler.config.clip_sample is False
    with torch.no_grad():
        again.unet.conv_out.weight.zero_()
        again.unet.conv_out.bias.zero_()
    seeds = np.array([4, 5])
    _, trajectory = ddim_trajectory(again, seeds, num_inference_steps=4, eta=0.0, batch_size=2)
    first = int(trajectory["timesteps"][0])
    expected = initial_noise(seeds, again.latent_shape) / again.scheduler.alphas_cumprod[first].sqrt()
    assert np.abs(trajectory["final"]).max() > 10
    np.testing.assert_allclose(trajectory["final"], expected.numpy(), rtol=1e-4)
    again.scheduler = build_scheduler({**authors, "clip_sample": True})  # the pixel default clips
    _, clipped = ddim_trajectory(again, seeds, num_inference_steps=4, eta=0.0, batch_size=2)
    assert np.abs(clipped["final"]).max() <= 1
    defaults = {"num_train_timesteps": 1000, "beta_schedule": "linear"}  # the saved schedule as before
    schema = {**defaults, "beta_start": 0.0001, "beta_end": 0.02, "clip_sample": True}
    assert build_scheduler(schema).to_json_string() == build_scheduler(defaults).to_json_string()


def test_guided_sampling_uses_the_empty_prompt_plus_s_times_the_prompts_difference(lora_model, tiny_model):
    """Classifier-free guidance against a hand computation: the noise each DDIM step used is
    eps(empty) + s (eps(prompt) - eps(empty)), each branch a separate UNet call on CLIP embeddings made
    here, and the next latent is the DDIM update (eta 0) with that noise."""
    seeds, scale = np.array([7, 8]), 7.5
    images, trajectory = ddim_trajectory(lora_model, seeds, 3, 0.0, 2, guidance_scale=scale)
    tokenizer, abar = lora_model.tokenizer, lora_model.scheduler.alphas_cumprod

    def embed(texts: list[str]) -> torch.Tensor:
        ids = tokenizer(
            texts, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
        )
        return lora_model.text_encoder(ids.input_ids)[0]

    with torch.no_grad():
        prompt, empty = embed(PROMPTS), embed(["", ""])
        steps = [int(t) for t in trajectory["timesteps"]]
        for i, t in enumerate(steps):
            x, when = torch.from_numpy(trajectory["latents"][:, i]), torch.full((2,), t)
            eps_prompt = lora_model.unet(x, when, encoder_hidden_states=prompt).sample
            eps_empty = lora_model.unet(x, when, encoder_hidden_states=empty).sample
            eps = eps_empty + scale * (eps_prompt - eps_empty)
            np.testing.assert_allclose(trajectory["predicted_noise"][:, i], eps.numpy(), rtol=1e-4, atol=1e-5)
            a, a_prev = abar[t], abar[steps[i + 1]] if i + 1 < len(steps) else torch.tensor(1.0)
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            following = trajectory["latents"][:, i + 1] if i + 1 < len(steps) else trajectory["final"]
            np.testing.assert_allclose(
                following, (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps).numpy(), atol=1e-4
            )
    np.testing.assert_array_equal(ddim_sample(lora_model, seeds, 3, 0.0, 1, guidance_scale=scale), images)
    unguided = ddim_sample(lora_model, seeds, 3, 0.0, 2)
    np.testing.assert_array_equal(ddim_sample(lora_model, seeds, 3, 0.0, 2, guidance_scale=1), unguided)
    assert not np.array_equal(images, unguided)
    with pytest.raises(InputError, match="text-conditioned"):
        ddim_sample(tiny_model, seeds, 2, 0.0, 2, guidance_scale=scale)

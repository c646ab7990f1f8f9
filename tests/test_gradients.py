"""Per-sample timestep-averaged gradients equal a plain loop over samples and timesteps."""

import numpy as np
import pytest
import torch

from diffattr.gradients import FeaturizerSpec, TimestepAveragedGradient, featurize, make_projector
from diffattr.outputs import OUTPUT_FUNCTIONS, evenly_spaced_timesteps, fixed_noise


def plain_loop_gradient(model, image, spec, noise_seed=0):
    """One forward/backward per timestep, averaged: the definition, computed the slow way."""
    params = model.trainable_parameters()
    total = [torch.zeros_like(p) for p in params]
    fn = OUTPUT_FUNCTIONS[spec.output]
    for t in evenly_spaced_timesteps(spec.timesteps, 1000):
        noise = fixed_noise(noise_seed, t, tuple(image.shape))[None]
        tt = torch.tensor([int(t)])
        x_t = model.scheduler.add_noise(image[None], noise, tt)
        value = fn(model.unet(x_t, tt).sample, noise, tt, model.scheduler.alphas_cumprod)[0]
        grads = torch.autograd.grad(value, params)
        total = [a + g / spec.timesteps for a, g in zip(total, grads, strict=True)]
    return torch.cat([g.reshape(-1) for g in total])


@pytest.mark.parametrize("output", ["loss", "squared_norm", "elbo", "linf"])
def test_batched_timesteps_equal_plain_loop(tiny_model, tiny_images, output):
    spec = FeaturizerSpec(output, timesteps=7, dim=16, projection="gaussian", seed=0)
    tiny_model.unet.eval()
    gradient = TimestepAveragedGradient(tiny_model, spec, timestep_batch=3)
    for image in tiny_images[:3]:
        fast = gradient(image)
        slow = plain_loop_gradient(tiny_model, image, spec)
        torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("output", ["loss", "squared_norm", "elbo", "linf"])
def test_samples_vmapped_together_equal_plain_loop(tiny_model, tiny_images, output):
    """vmap over samples of the batched-timestep gradient (timesteps in chunks of 2 for 3 samples)."""
    spec = FeaturizerSpec(output, timesteps=5, dim=16, projection="gaussian", seed=0)
    tiny_model.unet.eval()
    assert any(type(m).__name__ == "Attention" for m in tiny_model.unet.modules())  # its mid-block
    gradient = TimestepAveragedGradient(tiny_model, spec, timestep_batch=6, samples=3)
    fast = gradient.batch(tiny_images[:3])
    slow = torch.stack([plain_loop_gradient(tiny_model, image, spec) for image in tiny_images[:3]])
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)
    assert TimestepAveragedGradient(tiny_model, spec).samples == 51  # 256 // 5 for K = 5


def test_featurize_projects_the_per_sample_gradients(tiny_model, tiny_images):
    spec = FeaturizerSpec("squared_norm", timesteps=5, dim=32, projection="rademacher", seed=3)
    tiny_model.unet.eval()
    features = featurize(tiny_model, tiny_images, spec, batch_size=4)
    projector = make_projector(tiny_model, spec)
    expected = torch.stack([plain_loop_gradient(tiny_model, img, spec) for img in tiny_images])
    np.testing.assert_allclose(features, projector.project(expected).numpy(), rtol=1e-3, atol=1e-5)
    # Shards of the same split give the same rows as one pass over it.
    again = np.concatenate(
        [
            featurize(tiny_model, tiny_images[:2], spec, 1),
            featurize(tiny_model, tiny_images[2:], spec, 3),
        ]
    )
    np.testing.assert_allclose(again, features, rtol=1e-4, atol=1e-5)

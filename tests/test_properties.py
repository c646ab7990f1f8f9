"""Global properties: IS and entropy in closed form, FID/KID through clean-fid, the feature extractors'
loading code (classifier, Inception torchscript, open_clip aesthetic head) on small local models."""

import numpy as np
import pytest
import torch

from diffattr.errors import InputError
from diffattr.properties import (
    AestheticScorer,
    ImageClassifier,
    InceptionFeatures,
    classifier_outputs,
    frechet_distance,
    inception_score,
    kernel_distance,
    label_entropy,
    measure_property,
    train_classifier,
)


def test_lower_is_better_properties_are_attributed_as_their_negatives():
    from diffattr.properties import attributed_value

    assert attributed_value("fid", {"fid": 12.0}) == -12.0
    assert attributed_value("inception_score", {"inception_score": 3.0}) == 3.0


def test_classifier_needs_two_labels_and_says_which_key():
    with pytest.raises(InputError, match="shapley.property.features.*at least 2 labels"):
        train_classifier(torch.zeros(4, 1, 8, 8), np.zeros(4, int), 1, 1e-3, 4, 4, 0)


def test_inception_score_and_entropy_match_their_closed_forms():
    confident = np.eye(4)[np.arange(40) % 4]
    assert inception_score(confident) == pytest.approx(4.0, rel=1e-6)
    assert label_entropy(confident) == pytest.approx(2.0)
    collapsed = np.tile([0.7, 0.1, 0.1, 0.1], (40, 1))
    assert inception_score(collapsed) == pytest.approx(1.0)
    assert label_entropy(collapsed) == 0.0


def test_fid_and_kid_are_zero_for_identical_sets_and_grow_with_a_shift():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(400, 8))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    shifts = [0.25, 0.5, 1.0, 2.0]
    fids = [frechet_distance(feats + s, feats) for s in shifts]
    kids = [kernel_distance(feats + s, feats) for s in shifts]
    assert np.all(np.diff(fids) > 0) and np.all(np.diff(kids) > 0)
    assert abs(kernel_distance(feats, feats)) < 0.02 * kids[2]  # unbiased MMD: ~0, not exactly
    assert fids[2] == pytest.approx(8 * 1.0**2, rel=1e-6)  # mean shift of 1 in 8 dims, same covariance
    assert kernel_distance(feats + 1, feats, seed=3) == kernel_distance(feats + 1, feats, seed=3)


def test_classifier_learns_and_round_trips(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = digits.target < 3
    images = torch.tensor(digits.images[keep][:, None] / 8.0 - 1, dtype=torch.float32)
    labels = digits.target[keep]
    model = train_classifier(images, labels, steps=150, lr=3e-3, batch_size=64, width=8, seed=0)
    probs, feats = classifier_outputs(model, images)
    assert (probs.argmax(1) == labels).mean() > 0.9
    assert feats.shape == (len(images), 16)
    model.save_pretrained(tmp_path / "clf")
    again, _ = classifier_outputs(ImageClassifier.from_pretrained(tmp_path / "clf"), images)
    np.testing.assert_allclose(again, probs, rtol=1e-6)
    measured = measure_property("fid", images, lambda x: classifier_outputs(model, x), feats)
    assert measured["fid"] == pytest.approx(0.0, abs=1e-6) and measured["inception_score"] > 2


class FakeInception(torch.nn.Module):
    """The call signature of the StyleGAN / clean-fid Inception torchscript, on a tiny random net (its
    2,048 features and 1,008 logits by default; fewer make FID's matrix square root cheap)."""

    def __init__(self, features: int = 2048, logits: int = 1008):
        super().__init__()
        self.features = torch.nn.Linear(3, features)
        self.logits = torch.nn.Linear(features, logits)

    def forward(self, x: torch.Tensor, return_features: bool = False, no_output_bias: bool = False):
        f = self.features(x.mean(dim=(2, 3)) / 255)
        if return_features:
            return f
        out = f @ self.logits.weight.T if no_output_bias else self.logits(f)
        return torch.softmax(out, 1)


def test_inception_loads_from_a_local_folder_and_a_missing_file_is_one_line(tmp_path):
    torch.jit.script(FakeInception()).save(str(tmp_path / "inception-2015-12-05.pt"))
    probs, feats = InceptionFeatures(tmp_path)(torch.rand(5, 1, 8, 8) * 2 - 1)
    assert probs.shape == (5, 1008) and feats.shape == (5, 2048)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    with pytest.raises(InputError, match="inception_path.*not found") as err:
        InceptionFeatures(tmp_path / "nowhere")
    assert "\n" not in str(err.value)


def test_aesthetic_head_on_a_small_local_open_clip_model(tmp_path, tiny_clip):
    torch.save({"weight": torch.randn(1, 16), "bias": torch.tensor([5.0])}, tmp_path / "head.pt")
    scorer = AestheticScorer("tiny-test-clip", tmp_path / "clip.pt", tmp_path / "head.pt")
    images = torch.rand(6, 3, 8, 8) * 2 - 1
    scores = scorer(images)
    assert scores.shape == (6,) and np.all(
        np.abs(scores - 5) <= np.linalg.norm(torch.load(tmp_path / "head.pt")["weight"])
    )
    measured = measure_property("aesthetic", images, aesthetic=scorer, quantile=0.9)
    assert measured["aesthetic"] == pytest.approx(np.quantile(scores, 0.9))
    with pytest.raises(InputError, match="clip.weights"):
        AestheticScorer("tiny-test-clip", tmp_path / "missing.pt", tmp_path / "head.pt")


def test_precision_counts_images_within_a_reference_points_knn_radius():
    from diffattr.properties import precision

    # reference on a line at 0, 1, 2, 3, 10: 3rd-neighbour radii 3, 2, 2, 3, 9 (distances to the others)
    ref = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    radii = [3.0, 2.0, 2.0, 3.0, 9.0]
    gen = np.array([[-2.9], [5.9], [18.5], [30.0]])
    by_hand = np.mean(
        [any(abs(g - r) <= rad for r, rad in zip(ref[:, 0], radii, strict=True)) for g in gen[:, 0]]
    )
    assert precision(gen, ref, k=3) == pytest.approx(by_hand) == 0.75
    with pytest.raises(InputError, match="reference features"):
        measure_property(
            "precision", torch.zeros(2, 1, 4, 4), lambda x: (np.ones((2, 2)) / 2, np.zeros((2, 3)))
        )


def test_diversity_property_uses_the_extractors_features_against_the_reference():
    reference = np.repeat(np.eye(4) * 10, 5, axis=0)  # 4 clusters of 5 identical points
    features = np.eye(4)[[0, 0, 1, 1]] * 10
    out = measure_property(
        "diversity",
        torch.zeros(4, 1, 4, 4),
        lambda x: (np.full((4, 2), 0.5), features),
        reference_features=reference,
        clusters=4,
    )
    assert out["diversity"] == pytest.approx(1.0)


def test_diversity_on_clip_embeddings_matches_open_clip_and_an_independent_ward(tmp_path, tiny_clip):
    """features: clip embeds with open_clip's own preprocessing (resize, normalise) and unit norm; the
    diversity of those embeddings equals scikit-learn's Ward partition, nearest centroids and log2 entropy
    computed here. CLIP gives no label probabilities: IS is refused."""
    import open_clip
    from sklearn.cluster import AgglomerativeClustering

    from diffattr.properties import feature_extractor

    name, weights = tiny_clip
    prop = {"features": "clip", "clip": {"model": name, "weights": str(weights)}}
    extractor = feature_extractor(prop)
    gen = torch.Generator().manual_seed(0)
    colours = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    reference = colours.repeat_interleave(4, 0)[:, :, None, None] + 0.05 * torch.randn(
        12, 3, 8, 8, generator=gen
    )
    generated = colours[[0, 0, 2, 2]][:, :, None, None] + 0.05 * torch.randn(4, 3, 8, 8, generator=gen)
    model = open_clip.create_model(name, pretrained=str(weights)).eval()
    cfg = model.visual.preprocess_cfg
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)

    def embed(x: torch.Tensor) -> np.ndarray:
        x = torch.nn.functional.interpolate((x.clamp(-1, 1) + 1) / 2, size=(32, 32), mode="bicubic")
        with torch.no_grad():
            e = model.encode_image((x - mean) / std)
        return (e / e.norm(dim=-1, keepdim=True)).double().numpy()

    probs, ref_features = extractor(reference)
    assert probs is None
    np.testing.assert_allclose(ref_features, embed(reference), atol=1e-5)
    gen_features = extractor(generated)[1]
    labels = AgglomerativeClustering(n_clusters=3, linkage="ward").fit_predict(ref_features)
    centroids = np.stack([ref_features[labels == c].mean(0) for c in range(3)])
    nearest = ((gen_features[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    p = np.bincount(nearest, minlength=3) / len(nearest)
    by_hand = -sum(q * np.log2(q) for q in p if q > 0)
    out = measure_property("diversity", generated, extractor, reference_features=ref_features, clusters=3)
    assert set(out) == {"diversity"} and out["diversity"] == pytest.approx(by_hand)
    assert by_hand == pytest.approx(1.0)  # two colours of three, two images each
    with pytest.raises(InputError, match="label probabilities"):
        measure_property("inception_score", generated, extractor)

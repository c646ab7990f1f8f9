"""Global properties of a generative model, measured on a fixed-seed batch of its images.

inception_score  exp(E_x KL(p(y|x) || p(y))) with a classifier's label probabilities
entropy          entropy (bits) of the proportions of predicted labels: class / cluster diversity
fid, kid         Frechet / kernel inception distance to the training images, via clean-fid's functions,
                 on a feature extractor's features (lower is better); reference = the clean training images
precision        share of images on the reference feature manifold (k-NN radii): quality without diversity
diversity        entropy (bits) of the images' proportions over Ward clusters of the reference features
                 (Lu et al.'s CelebA-HQ property; `entropy` of classifier labels is the named alternative)
aesthetic        a quantile of a linear head on normalised CLIP image embeddings (open_clip)
The feature extractor is a small classifier trained on the data (`classifier`, for the demo), the
Inception network of clean-fid / StyleGAN from a local torchscript file (`inception`), or open_clip's image
encoder from a local checkpoint (`clip`: embeddings only, no label probabilities, so no IS or entropy).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffattr.diversity import diversity
from diffattr.errors import InputError
from diffattr.registry import PROPERTIES
from diffattr.store import atomic_path

INCEPTION_FILE = "inception-2015-12-05.pt"
BATCH = 128


def in_batches(fn, images: torch.Tensor, device: torch.device | str = "cpu") -> tuple[np.ndarray, ...]:
    """Apply `fn` (images -> tuple of arrays) to batches of images on `device` and concatenate."""
    parts = [fn(images[i : i + BATCH].to(device)) for i in range(0, len(images), BATCH)]
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))


def attributed_value(name: str, measured: dict[str, float]) -> float:
    """The number whose credit is split among contributors: the property, negated when lower is better
    (FID, KID), so that a positive value always means a contributor makes the model better."""
    return -measured[name] if PROPERTIES[name].lower_is_better else measured[name]


class ImageClassifier(nn.Module):
    """A small CNN for images in [-1, 1]; its penultimate layer is the feature space of FID/KID."""

    def __init__(self, channels: int, num_classes: int, width: int = 32):
        super().__init__()
        self.config = {"channels": channels, "num_classes": num_classes, "width": width}
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, features)."""
        features = self.body(x)
        return self.head(features), features

    def save_pretrained(self, path: str | Path, extra: dict | None = None) -> None:
        with atomic_path(path) as tmp:
            tmp.mkdir(parents=True)
            torch.save(self.state_dict(), tmp / "classifier.pt")
            (tmp / "config.json").write_text(json.dumps({**self.config, **(extra or {})}, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ImageClassifier:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise InputError(f"not a saved classifier (no config.json): {path}")
        cfg = json.loads((path / "config.json").read_text())
        model = cls(cfg["channels"], cfg["num_classes"], cfg["width"])
        model.load_state_dict(torch.load(path / "classifier.pt", map_location="cpu"))
        return model.eval()


def train_classifier(
    images: torch.Tensor,
    labels: np.ndarray,
    steps: int,
    lr: float,
    batch_size: int,
    width: int,
    seed: int,
) -> ImageClassifier:
    """Fit an ImageClassifier (AdamW, cross-entropy) on images in [-1, 1] with labels 0..C-1."""
    torch.manual_seed(seed)
    y = torch.as_tensor(labels, dtype=torch.long)
    if len(torch.unique(y)) < 2:
        raise InputError(
            "config key 'shapley.property.features': the classifier needs at least 2 labels in the data "
            "(set data.image_folder.label_column, or use features: inception)"
        )
    model = ImageClassifier(images.shape[1], int(y.max()) + 1, width)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(images), (min(batch_size, len(images)),), generator=generator)
        loss = nn.functional.cross_entropy(model(images[idx])[0], y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def classifier_outputs(model: ImageClassifier, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Label probabilities and features of images in [-1, 1], batch by batch on the model's device."""
    model.eval()

    def run(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        logits, features = model(x)
        return torch.softmax(logits, 1).cpu().numpy(), features.cpu().numpy().astype(np.float64)

    return in_batches(run, images, next(model.parameters()).device)


class InceptionFeatures:
    """The Inception-v3 torchscript of clean-fid / StyleGAN metrics, from a local folder or file.

    Images are uint8-range floats (N, 3, H, W); the network resizes them itself. Features are the
    2,048-d pool3 activations (FID/KID); probabilities are its softmax without the output bias
    (the original Inception Score).
    """

    def __init__(self, path: str | Path, device: torch.device | str = "cpu"):
        path = Path(path)
        file = path / INCEPTION_FILE if path.is_dir() else path
        if not file.is_file():
            raise InputError(
                f"config key 'shapley.property.inception_path': {file} not found "
                f"(place {INCEPTION_FILE} there)"
            )
        self.device = torch.device(device)
        self.net = torch.jit.load(str(file), map_location=self.device).eval()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        def run(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
            x = (x.clamp(-1, 1) + 1) * 127.5
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            probs = self.net(x, no_output_bias=True)
            features = self.net(x, return_features=True)
            return probs.cpu().numpy().astype(np.float64), features.cpu().numpy().astype(np.float64)

        return in_batches(run, images, self.device)


def feature_extractor(prop: dict, classifier: str | Path | None = None, device: torch.device | str = "cpu"):
    """images -> (label probabilities, features) for the `shapley.property` section's `features`; CLIP
    gives no label probabilities (None)."""
    if prop["features"] == "inception":
        return InceptionFeatures(prop["inception_path"], device)
    if prop["features"] == "clip":
        from diffattr.clip import ClipEmbedder

        clip = prop["clip"]
        embedder = ClipEmbedder(clip["model"], clip["weights"], device, key="shapley.property.clip.weights")
        return lambda images: (None, embedder(images))
    if classifier is None:
        raise InputError(
            "config key 'shapley.property.features': classifier features need a trained classifier"
        )
    model = ImageClassifier.from_pretrained(classifier).to(device)
    return lambda images: classifier_outputs(model, images)


def inception_score(probs: np.ndarray) -> float:
    """exp(mean_x KL(p(y|x) || p(y))): high when each image is confidently one class and all classes occur."""
    probs = np.clip(probs, 1e-12, 1)
    marginal = probs.mean(0, keepdims=True)
    return float(np.exp((probs * (np.log(probs) - np.log(marginal))).sum(1).mean()))


def label_entropy(probs: np.ndarray) -> float:
    """Entropy in bits of the proportions of argmax labels among the images."""
    counts = np.bincount(probs.argmax(1), minlength=probs.shape[1]).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two feature sets (clean-fid's frechet_distance on their means and covariances)."""
    from cleanfid.fid import frechet_distance as clean_frechet

    stats = [(f.mean(0), np.cov(f, rowvar=False)) for f in (features_a, features_b)]
    return float(clean_frechet(stats[0][0], stats[0][1], stats[1][0], stats[1][1]))


def kernel_distance(
    features_a: np.ndarray, features_b: np.ndarray, seed: int = 0, num_subsets: int = 100
) -> float:
    """KID (clean-fid's kernel_distance, cubic polynomial kernel MMD), with its subset draws seeded."""
    from cleanfid.fid import kernel_distance as clean_kernel

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return float(clean_kernel(features_a, features_b, num_subsets=num_subsets))
    finally:
        np.random.set_state(state)


def precision(features: np.ndarray, reference_features: np.ndarray, k: int = 3) -> float:
    """Improved precision (Kynkaanniemi et al., NeurIPS 2019): the share of generated images whose feature
    lies within the k-th-nearest-neighbour radius of some reference feature. It falls with every image
    off the data manifold (noise, garbage) and, unlike IS or FID, does not reward diversity."""
    ref = torch.as_tensor(reference_features, dtype=torch.float64)
    gen = torch.as_tensor(features, dtype=torch.float64)
    radii = torch.cdist(ref, ref).kthvalue(k + 1, dim=1).values  # the 0th neighbour is the point itself
    inside = (torch.cdist(gen, ref) <= radii[None, :]).any(1)
    return float(inside.double().mean())


class AestheticScorer:
    """A linear head (weight, bias) on L2-normalised open_clip image embeddings, as the LAION aesthetic model.

    `model` is an open_clip architecture name; `weights` a local checkpoint of it; `head` a torch file
    with 'weight' (1, D) and 'bias' (1,). Nothing is downloaded.
    """

    def __init__(self, model: str, weights: str | Path, head: str | Path, device: torch.device | str = "cpu"):
        import open_clip

        for key, file in (("weights", weights), ("head", head)):
            if not Path(file).is_file():
                raise InputError(f"config key 'shapley.property.clip.{key}': file not found: {file}")
        self.device = torch.device(device)
        self.model = open_clip.create_model(model, pretrained=str(weights), device=self.device).eval()
        state = torch.load(head, map_location=self.device)
        self.weight, self.bias = state["weight"].float(), state["bias"].float()
        self.size = self.model.visual.image_size
        self.size = self.size[0] if isinstance(self.size, tuple | list) else self.size
        mean, std = self.model.visual.preprocess_cfg["mean"], self.model.visual.preprocess_cfg["std"]
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        def run(x: torch.Tensor) -> tuple[np.ndarray]:
            x = (x.clamp(-1, 1) + 1) / 2
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)
            emb = self.model.encode_image((x - self.mean) / self.std)
            emb = emb / emb.norm(dim=-1, keepdim=True)
            return ((emb @ self.weight.T + self.bias).squeeze(1).cpu().numpy().astype(np.float64),)

        return in_batches(run, images, self.device)[0]


def measure_property(
    name: str,
    images: torch.Tensor,
    extractor=None,
    reference_features: np.ndarray | None = None,
    aesthetic: AestheticScorer | None = None,
    quantile: float = 0.9,
    seed: int = 0,
    clusters: int = 20,
    neighbours: int = 3,
    cluster_distance: str = "euclidean",
) -> dict[str, float]:
    """The named property of generated images in [-1, 1]; IS and entropy come along (same forward pass) when
    the extractor gives label probabilities, FID and KID whenever the property is one of them, precision or
    diversity when it is the property."""
    if name not in PROPERTIES:
        raise InputError(
            f"config key 'shapley.property.name': unknown property {name!r} (known: {list(PROPERTIES)})"
        )
    out: dict[str, float] = {}
    if PROPERTIES[name].measured_with == "clip":
        if aesthetic is None:
            raise InputError("property 'aesthetic' needs shapley.property.clip (model, weights, head)")
        out["aesthetic"] = float(np.quantile(aesthetic(images), quantile))
        return out
    probs, features = extractor(images)
    if probs is not None:
        out["inception_score"] = inception_score(probs)
        out["entropy"] = label_entropy(probs)
    elif name in ("inception_score", "entropy"):
        raise InputError(f"property {name!r} needs label probabilities, which CLIP features do not give")
    if PROPERTIES[name].needs_reference and reference_features is None:
        raise InputError(f"property {name!r} needs reference features of the training images")
    if PROPERTIES[name].lower_is_better:
        out["fid"] = frechet_distance(features, reference_features)
        out["kid"] = kernel_distance(features, reference_features, seed=seed)
    if name == "precision":
        out["precision"] = precision(features, reference_features, neighbours)
    if name == "diversity":
        out["diversity"] = diversity(features, reference_features, clusters, cluster_distance)
    return out

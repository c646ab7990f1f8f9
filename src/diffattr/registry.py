"""What each name a config picks from a fixed list means: method kinds, properties and estimators.

One record per name. The config checks (diffattr.config), the rules' input functions and wildcard
constraints (rules/common.smk) and the scripts read these records, so nothing else branches on a kind's
name; the schema's enums list the same names (tests/test_registry.py). Kept free of heavy imports: the
Snakefile reads it while it parses. docs/methods.md, "Adding an attribution method", walks through an
addition.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from diffattr.errors import InputError

TARGET_SPLITS = ("val", "gen")


@dataclass(frozen=True)
class MethodKind:
    """What a method of one `kind` needs and which rule scores it.

    `score` is the "module:function" of its scoring function, imported on use. Its call depends on the
    rule: for `local_scores`, score(method, GradientInputs) -> (targets, lambda_rel) -> (T, N) scores;
    for `tracin_scores`, score(checkpoints) -> scores; for `datamodel_scores` without a damping,
    score(masks, outputs) -> scores. The other rules score a single kind and call it directly.
    """

    rule: str
    score: str
    featurizer: bool = False  # names one of `featurizers:` (methods.{name}.featurizer)
    features: Literal["model", "checkpoints"] | None = None  # projected gradient shards it reads: of
    # the full model, or of each of its training checkpoints (which it then needs: train.checkpoints)
    train_at_draws: bool = False  # at checkpoints, each training image at its own latest training draw
    normalize_timesteps: bool | None = None  # what its featurizer's normalize_timesteps must be
    damping: bool = False  # a damping (ridge penalty) chosen on held-out targets
    residuals: bool = False  # the full model's errors on the training images (residuals/{featurizer})
    retrains: bool = False  # fitted on the retrains of section datamodel
    ensemble: bool = False  # may average the scores of several models (methods.{name}.ensemble)
    trajectories: bool = False  # gen targets featurized along their DDIM runs (generate stores them)
    splits: tuple[str, ...] = TARGET_SPLITS  # the target splits it scores
    omitted_without: str | None = None  # a config key that, unset, leaves its methods out

    @property
    def checkpoints(self) -> bool:
        """Whether it needs the full model's training checkpoints."""
        return self.features == "checkpoints"


_LOCAL = {"rule": "local_scores", "featurizer": True, "features": "model"}
_CHECKPOINTS = {"rule": "tracin_scores", "featurizer": True, "features": "checkpoints"}

# In the schema's order.
METHOD_KINDS: dict[str, MethodKind] = {
    "trak": MethodKind(
        "trak_scores",
        "diffattr.attribution:ensemble_scores",
        featurizer=True,
        features="model",
        damping=True,
        ensemble=True,
    ),
    "pixel": MethodKind("pixel_scores", "diffattr.attribution:pixel_similarity"),
    "clip": MethodKind("clip_scores", "diffattr.clip:clip_similarity", omitted_without="clip.weights"),
    "empirical_influence": MethodKind(
        "datamodel_scores", "diffattr.datamodels:empirical_influence", retrains=True
    ),
    "datamodel": MethodKind(
        "datamodel_scores", "diffattr.datamodels:datamodel_ridge", retrains=True, damping=True
    ),
    "das": MethodKind(
        **_LOCAL,
        score="diffattr.das:das_score_function",
        normalize_timesteps=True,
        damping=True,
        residuals=True,
    ),
    "relative_if": MethodKind(**_LOCAL, score="diffattr.influence:relative_influence_function", damping=True),
    "renormalized_if": MethodKind(
        **_LOCAL, score="diffattr.influence:renormalized_influence_function", damping=True
    ),
    "datainf": MethodKind(**_LOCAL, score="diffattr.datainf:datainf_score_function", damping=True),
    "grad_dot": MethodKind(**_LOCAL, score="diffattr.influence:gradient_dot_function"),
    "grad_cosine": MethodKind(**_LOCAL, score="diffattr.influence:gradient_cosine_function"),
    "tracin": MethodKind(**_CHECKPOINTS, score="diffattr.influence:tracin", train_at_draws=True),
    "retrac": MethodKind(
        **_CHECKPOINTS, score="diffattr.influence:retrac", train_at_draws=True, normalize_timesteps=True
    ),
    "tracin_averaged": MethodKind(**_CHECKPOINTS, score="diffattr.influence:tracin"),
    "retrac_averaged": MethodKind(
        **_CHECKPOINTS, score="diffattr.influence:retrac", normalize_timesteps=True
    ),
    "ekfac": MethodKind(
        "ekfac_scores",
        "diffattr.ekfac:ekfac_score_grid",
        featurizer=True,
        normalize_timesteps=False,
        damping=True,
    ),
    "journey_trak": MethodKind(
        "trak_scores",
        "diffattr.attribution:ensemble_scores",
        featurizer=True,
        features="model",
        normalize_timesteps=False,
        damping=True,
        trajectories=True,
        splits=("gen",),
    ),
}


def method_kind(kind: str) -> MethodKind:
    """The record of a method kind by its config name."""
    if kind not in METHOD_KINDS:
        raise InputError(f"unknown method kind {kind!r} (known: {sorted(METHOD_KINDS)})")
    return METHOD_KINDS[kind]


def score_function(kind: str) -> Callable:
    """A kind's scoring function, imported from its module."""
    module, _, name = method_kind(kind).score.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Property:
    """A global property of a generative model that contributors' values split (shapley.property.name)."""

    lower_is_better: bool = False  # attributed negated, so that a positive value always helps
    needs_reference: bool = False  # compared with features of the clean training images
    measured_with: Literal["features", "clip"] = "features"  # property.features' network, or a CLIP head


PROPERTIES: dict[str, Property] = {
    "inception_score": Property(),
    "entropy": Property(),
    "fid": Property(lower_is_better=True, needs_reference=True),
    "kid": Property(lower_is_better=True, needs_reference=True),
    "precision": Property(needs_reference=True),
    "diversity": Property(needs_reference=True),
    "aesthetic": Property(measured_with="clip"),
}


@dataclass(frozen=True)
class Estimator:
    """An estimator of contributor values (shapley.estimator) and the coalitions it is fitted on."""

    design: Literal["shapley_kernel", "uniform", "leave_one_out"]
    bootstrap: bool = True  # standard errors by resampling coalitions (none with one coalition per value)
    weighted: bool = False  # regression weights from an enumerated design (shapley.enumerate_sizes)
    own_coalitions: bool = False  # fitted on coalitions of its own (shapley.datamodel.num_coalitions)


ESTIMATORS: dict[str, Estimator] = {
    "kernelshap": Estimator("shapley_kernel", weighted=True),
    "banzhaf": Estimator("uniform"),
    "loo": Estimator("leave_one_out", bootstrap=False),
    "datamodel": Estimator("uniform", own_coalitions=True),
}

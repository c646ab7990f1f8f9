"""The papers' published values beside ours, for a run whose config follows a published protocol:
D-TRAK's CIFAR-2 LDS (per output function, K and k) and Lu et al.'s agreement of sparsified fine-tuning
with retraining. The values and their sources are in published.csv beside this module."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PUBLISHED = Path(__file__).with_name("published.csv")
# The method kind whose scores the published LDS values are (TRAK / D-TRAK of one model).
PUBLISHED_KIND = "trak"
LU_CIFAR20_CLASSES = [40, 41, 42, 43, 44, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 80, 81, 82, 83, 84]


def published_values() -> pd.DataFrame:
    return pd.read_csv(PUBLISHED)


def lds_protocol(config: dict) -> str | None:
    """'d-trak-cifar2' when the LDS branch runs D-TRAK's CIFAR-2 protocol (classes 1 and 7, 5,000 training
    and 1,000 validation images, 64 subsets at alpha 0.5), else None."""
    data, lds = config.get("data", {}), config.get("lds", {})
    if (
        lds.get("enabled")
        and data.get("source") == "cifar10"
        and sorted(data.get("classes") or []) == [1, 7]
        and (data.get("n_train"), data.get("n_val")) == (5000, 1000)
        and (lds.get("num_subsets"), lds.get("alpha")) == (64, 0.5)
    ):
        return "d-trak-cifar2"
    return None


def contributor_protocol(config: dict) -> str | None:
    """The Lu et al. setting a contributor run follows: CIFAR-20 (its 20 CIFAR-100 classes), CelebA-HQ
    (a latent model valued by diversity) or ArtBench (a LoRA valued by aesthetic score); else None."""
    shapley = config.get("shapley", {})
    if not shapley.get("enabled"):
        return None
    data = shapley.get("data") or config.get("data", {})
    family = (shapley.get("model") or config.get("model", {})).get("family", "pixel")
    prop = shapley.get("property", {}).get("name")
    if data.get("source") == "cifar100" and sorted(data.get("classes") or []) == LU_CIFAR20_CLASSES:
        return "lu-cifar20"
    if family == "latent" and prop == "diversity":
        return "lu-celebahq"
    if family == "lora" and prop == "aesthetic":
        return "lu-artbench"
    return None


def lds_beside_published(lds: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Our LDS (%) of every single-model TRAK-kind method beside the published value for the same split,
    output function, K and k; empty when the run follows no published protocol or none matches."""
    protocol = lds_protocol(config)
    if protocol is None:
        return pd.DataFrame()
    published = published_values().query("protocol == @protocol")
    rows = []
    for method, spec in config.get("methods", {}).items():
        if spec.get("kind") != PUBLISHED_KIND or spec.get("ensemble", {}).get("members", 1) > 1:
            continue
        featurizer = config["featurizers"][spec["featurizer"]]
        for split in ("val", "gen"):
            ours = lds[(lds["method"] == method) & (lds["split"] == split)]
            match = published[
                (published["split"] == split)
                & (published["output"] == featurizer["output"])
                & (published["timesteps"] == featurizer["timesteps"])
                & (published["dim"] == featurizer["dim"])
            ]
            if len(ours) and len(match):
                rows.append(
                    {
                        "method": method,
                        "split": split,
                        "output": featurizer["output"],
                        "K": featurizer["timesteps"],
                        "k": featurizer["dim"],
                        "ours (%)": 100 * float(ours["lds"].iloc[0]),
                        "published (%)": float(match["value"].iloc[0]),
                        "source": match["source"].iloc[0],
                    }
                )
    return pd.DataFrame(rows)


def agreement_beside_published(agreement: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Our Pearson agreement of sparsified fine-tuning with retraining beside Lu et al.'s for the same
    setting (every published step count, ours marked with our fine-tuning steps); empty when none."""
    protocol = contributor_protocol(config)
    ours = agreement[(agreement["how"] == "sparse_ft") & (agreement["method"] == "pearson")]
    if protocol is None or ours.empty:
        return pd.DataFrame()
    published = published_values().query("protocol == @protocol")
    steps = config["shapley"]["finetune"]["steps"]
    return pd.DataFrame(
        {
            "estimator": ", ".join(sorted(set(ours["estimator"]))),
            "our steps": steps,
            "ours (r)": ", ".join(f"{r:.3f}" for r in ours["r"]),
            "published steps": int(row.finetune_steps),
            "published (r)": row.value,
            "source": row.source,
        }
        for row in published.itertuples()
    )

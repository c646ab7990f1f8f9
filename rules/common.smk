# Paths, wildcard constraints, resources and targets shared by every rule.
import math
import re
import sys

OUT = f"{config['results']}/{config['experiment']}"
TARGET_SPLITS = ["val", "gen"]
GPU_RULE_GPUS = 0 if config["device"] == "cpu" else 1
FULL_SEED = config["train"]["seeds"][0]


def out(path):
    """A path inside this experiment's output folder."""
    return f"{OUT}/{path}"


def log_path(rule_name, wildcards_part="all"):
    return out(f"logs/{rule_name}/{wildcards_part}.log")


def bench_path(rule_name, wildcards_part="all"):
    return out(f"benchmarks/{rule_name}/{wildcards_part}.tsv")


def methods_of_kind(kind):
    return [name for name, m in config["methods"].items() if m["kind"] == kind]


def name_regex(names):
    """A wildcard constraint matching exactly these names (never empty)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def split_size(split):
    """Number of samples in a split, known from the config alone (so dry runs need no data)."""
    return {
        "train": config["data"]["n_train"],
        "val": config["data"]["n_val"],
        "gen": config["generate"]["num_images"],
    }[split]


def num_shards(split):
    return math.ceil(split_size(split) / config["featurize"]["shard_size"])


def shard_paths(featurizer, split):
    return [
        out(f"grads/{featurizer}/{split}/{shard}.zarr")
        for shard in range(num_shards(split))
    ]


def split_images(split):
    """The image store of a split: real data for train/val, generated samples for gen."""
    return out("samples/full.zarr") if split == "gen" else out(f"data/{split}.zarr")


def lds_models():
    """(subset, seed) of every LDS retrain."""
    return [
        (m, s)
        for m in range(config["lds"]["num_subsets"])
        for s in config["lds"]["train_seeds"]
    ]


def lds_output_paths():
    return [out(f"outputs/lds/{m}/seed{s}.npz") for m, s in lds_models()]


def score_paths():
    return [
        out(f"scores/{method}/{split}.zarr")
        for method in config["methods"]
        for split in TARGET_SPLITS
    ]


def final_targets():
    return [out("metrics/lds.csv"), out("report/index.html")]


wildcard_constraints:
    split="train|val|gen",
    target_split="val|gen",
    shard=r"\d+",
    m=r"\d+",
    seed=r"\d+",
    featurizer=name_regex(config["featurizers"]),


def gradient_store_bytes():
    """Disk taken by every featurizer's projected gradients (float32), for the up-front size notice."""
    rows = sum(split_size(split) for split in ["train", *TARGET_SPLITS])
    return {name: rows * f["dim"] * 4 for name, f in config["featurizers"].items()}


onstart:
    sizes = gradient_store_bytes()
    print(
        f"diffattr: gradient stores under {OUT}/grads: "
        + ", ".join(
            f"{name} {size / 2**20:.1f} MiB" for name, size in sizes.items()
        )
        + f" (total {sum(sizes.values()) / 2**30:.2f} GiB)",
        file=sys.stderr,
    )

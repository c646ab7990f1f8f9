# Paths, wildcard constraints, resources and targets shared by every rule.
import math
import os
import re
import sys
from types import SimpleNamespace

from diffattr.registry import ESTIMATORS as ESTIMATOR_KINDS
from diffattr.registry import PROPERTIES, method_kind
from diffattr.preflight import check_machine
from diffattr.pretrained import own_folder

OUT = f"{config['results']}/{config['experiment']}"
TARGET_SPLITS = ["val", "gen"]


def config_value(key):
    """The config's value of a dotted key ("clip.weights")."""
    value = config
    for part in key.split("."):
        value = value[part]
    return value


# Methods whose kind needs a config key that is unset (CLIP similarity without CLIP weights, the demo's
# case) are left out with a notice.
for _name, _method in list(config["methods"].items()):
    _needed = method_kind(_method["kind"]).omitted_without
    if _needed and not config_value(_needed):
        print(
            f"diffattr: method '{_name}' (kind {_method['kind']}) omitted: config key '{_needed}' is unset",
            file=sys.stderr,
        )
        del config["methods"][_name]
GPU_RULE_GPUS = 0 if config["device"] == "cpu" else 1
FULL_SEED = config["train"]["seeds"][0]
# A user's own trained model (model.pretrained of the pixel and latent families) is the full model of
# FULL_SEED (rule pretrained_full); every other model still trains.
OWN_MODEL = own_folder(config["model"]) is not None


def out(path):
    """A path inside this experiment's output folder."""
    return f"{OUT}/{path}"


def log_path(rule_name, wildcards_part="all"):
    return out(f"logs/{rule_name}/{wildcards_part}.log")


def bench_path(rule_name, wildcards_part="all"):
    return out(f"benchmarks/{rule_name}/{wildcards_part}.tsv")


def kind_of(method):
    """The registry's record of a method's kind (diffattr.registry)."""
    return method_kind(config["methods"][method]["kind"])


def methods_where(condition):
    """The methods whose kind's record meets `condition`, in config order."""
    return [name for name in config["methods"] if condition(kind_of(name))]


def methods_scored_by(rule_name):
    """The methods that rule `rule_name` scores."""
    return methods_where(lambda kind: kind.rule == rule_name)


def name_regex(names):
    """A wildcard constraint matching exactly these names (never empty)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def split_size(split):
    """Number of samples in a split, known from the config alone (so dry runs need no data)."""
    return {
        "train": config["data"]["n_train"],
        "train_at_draws": config["data"]["n_train"],
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


def checkpoint_shard_paths(featurizer, split):
    """A featurizer's shards of a split at every training checkpoint, checkpoint by checkpoint."""
    return [
        out(f"grads/{featurizer}/ckpt{c}/{split}/{shard}.zarr")
        for c in range(config["train"]["checkpoints"])
        for shard in range(num_shards(split))
    ]


def featurizers_of(methods):
    """The featurizers named by these methods, in config order."""
    used = {config["methods"][m]["featurizer"] for m in methods}
    return [name for name in config["featurizers"] if name in used]


def featurize_batches(stage):
    """(featurizer, model folder, [(checkpoint, split, shard, output), ...]) of the batch jobs of a stage:
    featurize (the full model), featurize_checkpoint (its training checkpoints, TracIn / ReTrac) or
    featurize_member (the other models of the ensembles), each featurizer's shards of one model grouped
    featurize.shards_per_job to a job. A batch never mixes featurizers or models, so changing one
    reruns only its own shards."""
    full = out(f"models/full/seed{FULL_SEED}")
    if stage == "featurize_member":
        jobs = [
            (
                featurizer,
                member_model(member),
                member,
                [None],
                ["train", *TARGET_SPLITS],
            )
            for featurizer, member in ensemble_featurizations()
        ]
    else:
        at_checkpoints = stage == "featurize_checkpoint"
        features = "checkpoints" if at_checkpoints else "model"
        methods = methods_where(lambda kind: kind.features == features)
        checkpoints = (
            list(range(config["train"]["checkpoints"])) if at_checkpoints else [None]
        )
        jobs = [
            (
                featurizer,
                full,
                "",
                checkpoints,
                featurized_splits(featurizer, at_checkpoints),
            )
            for featurizer in featurizers_of(methods)
        ]
    return [
        (featurizer, model, batch)
        for featurizer, model, member, checkpoints, splits in jobs
        for batch in batches(
            [
                (
                    c,
                    split,
                    shard,
                    featurize_shard_path(featurizer, c, split, shard, member),
                )
                for c in checkpoints
                for split in splits
                for shard in range(num_shards(split))
            ],
            config["featurize"]["shards_per_job"],
        )
    ]


def ensemble_featurizations():
    """(featurizer, member folder) of every ensemble model other than the attributed one, once each."""
    pairs = [
        (config["methods"][method]["featurizer"], member)
        for method in methods_where(lambda kind: kind.ensemble)
        for member in ensemble_members(method)
        if member
    ]
    return list(dict.fromkeys(pairs))


def member_model(member):
    """The model folder of an ensemble member: a full model of another seed, or a datamodel retrain."""
    if member.startswith("seed"):
        return out(f"models/full/{member}")
    return out(
        f"models/datamodel/{member.removeprefix('subset')}/seed{DATAMODEL['train_seeds'][0]}"
    )


def featurized_splits(featurizer, at_checkpoints):
    """The splits a featurizer computes: at the checkpoints, the training images at their own training
    draws (train_at_draws) and / or at the featurizer's fixed timesteps (train), as its methods' kinds
    take them, besides the targets.
    """
    if not at_checkpoints:
        return ["train", *TARGET_SPLITS]
    methods = [
        m
        for m in methods_where(lambda kind: kind.checkpoints)
        if config["methods"][m]["featurizer"] == featurizer
    ]
    # train_at_draws first, whatever the order of the methods: the shards' order sets the batch jobs
    train = sorted(
        {train_split_at_checkpoints(m) for m in methods},
        key=lambda s: s != "train_at_draws",
    )
    return [*train, *TARGET_SPLITS]


def train_split_at_checkpoints(method):
    """A checkpoint method's training split: at each image's own latest training draw (t, noise, flip),
    Diffusion-TracIn's and ReTrac's, or at the featurizer's fixed timesteps (D-TRAK's TracIn baseline).
    """
    return "train_at_draws" if kind_of(method).train_at_draws else "train"


def featurize_shard_path(featurizer, checkpoint, split, shard, member=""):
    """grads/{featurizer}/[{member}/][ckpt{c}/]{split}/{shard}.zarr"""
    folders = [member, "" if checkpoint is None else f"ckpt{checkpoint}"]
    prefix = "".join(f"{f}/" for f in folders if f)
    return out(f"grads/{featurizer}/{prefix}{split}/{shard}.zarr")


def local_score_inputs(wildcards):
    """The method's gradient shards, the LDS data its damping is chosen on, DAS's residuals."""
    kind = kind_of(wildcards.method)
    featurizer = config["methods"][wildcards.method]["featurizer"]
    inputs = {
        "train": shard_paths(featurizer, "train"),
        "targets": shard_paths(featurizer, wildcards.target_split),
    }
    if kind.damping:
        inputs.update(subsets=out("subsets/lds.npz"), outputs=lds_output_paths())
    if kind.residuals:
        inputs["residuals"] = out(f"residuals/{featurizer}.npz")
    return inputs


def tracin_inputs(wildcards):
    """The full model (its training.json holds each checkpoint's lr and lr sum) and the checkpoints' shards."""
    featurizer = config["methods"][wildcards.method]["featurizer"]
    return {
        "model": out(f"models/full/seed{FULL_SEED}"),
        "train": checkpoint_shard_paths(
            featurizer, train_split_at_checkpoints(wildcards.method)
        ),
        "targets": checkpoint_shard_paths(featurizer, wildcards.target_split),
    }


def ekfac_factors_path(method):
    """A method of kind ekfac's factors: one file per featurizer and factor draws (rule ekfac_factors)."""
    m = config["methods"][method]
    return out(f"ekfac/{m['featurizer']}/factors-{m['draws']['factors']}.npz")


def ekfac_fits():
    """(featurizer, factor draws) of the EK-FAC methods: each pair's factors are fitted once."""
    methods = [config["methods"][m] for m in methods_scored_by("ekfac_scores")]
    return sorted({(m["featurizer"], str(m["draws"]["factors"])) for m in methods})


def ekfac_inputs(wildcards):
    """The full model, its EK-FAC factors, the train and target images, the LDS data for the damping."""
    return {
        "model": out(f"models/full/seed{FULL_SEED}"),
        "factors": ekfac_factors_path(wildcards.method),
        "train": out("data/train.zarr"),
        "targets": split_images(wildcards.target_split),
        "subsets": out("subsets/lds.npz"),
        "outputs": lds_output_paths(),
    }


def split_images(split):
    """The image store of a split: real data for train/val, generated samples for gen."""
    if split == "gen":
        return out("samples/full.zarr")
    return out("data/train.zarr" if split == "train_at_draws" else f"data/{split}.zarr")


def ensemble_members(method):
    """The folders under grads/{featurizer}/ of the models whose scores a method averages: "" (the
    attributed full model) alone, the datamodel retrains "subset{m}" (over: subsets, D-TRAK's), or the
    attributed model then full models of the next seeds "seed{s}" (over: seeds)."""
    ensemble = config["methods"][method].get("ensemble", {"members": 1})
    if ensemble["members"] == 1:
        return [""]
    if ensemble["over"] == "subsets":
        return [f"subset{m}" for m in range(ensemble["members"])]
    return ["", *(f"seed{FULL_SEED + i}" for i in range(1, ensemble["members"]))]


def ensemble_shard_paths(method, split):
    """Gradient shards of every ensemble member of a method, member after member."""
    featurizer = config["methods"][method]["featurizer"]
    return [
        featurize_shard_path(featurizer, None, split, shard, member)
        for member in ensemble_members(method)
        for shard in range(num_shards(split))
    ]


def lds_output_paths():
    return retrain_output_paths("lds", retrain_models("lds"))


# The lds section as rules' params, without the job-packing knob: changing it reruns no subsets or outputs.
LDS_PARAMS = {k: v for k, v in config["lds"].items() if k != "models_per_job"}


def batches(items, size):
    """Consecutive groups of at most `size` items: the models one batched job makes (none if size is 1)."""
    items = list(items)
    return [items[i : i + size] for i in range(0, len(items), size)] if size > 1 else []


def retrain_models(branch):
    """(subset, seed) of every retrain of a branch: "lds" (the evaluation subsets) or "datamodel"."""
    section = config[branch]
    return [
        (m, s) for m in range(section["num_subsets"]) for s in section["train_seeds"]
    ]


def retrain_batches():
    """(branch, b, models): the LDS and datamodel retrains grouped lds.models_per_job to a job
    (train_{branch}_batch{b}, {branch}_outputs_batch{b}); none when models_per_job is 1.
    """
    return [
        (branch, b, batch)
        for branch in ("lds", "datamodel")
        for b, batch in enumerate(
            batches(retrain_models(branch), config["lds"]["models_per_job"])
        )
    ]


def retrain_model_paths(branch, models):
    return [out(f"models/{branch}/{m}/seed{s}") for m, s in models]


def retrain_output_paths(branch, models):
    return [out(f"outputs/{branch}/{m}/seed{s}.npz") for m, s in models]


def method_splits(method):
    """The target splits a method is scored on (Journey-TRAK: gen only, the targets with trajectories)."""
    return list(kind_of(method).splits)


def score_paths():
    return [
        out(f"scores/{method}/{split}.zarr")
        for method in config["methods"]
        for split in method_splits(method)
    ]


# Journey-TRAK (rules/attribute.smk): generate also stores the sampling trajectories, only when asked.
TRAJECTORY_METHODS = methods_where(lambda kind: kind.trajectories)


def generate_outputs():
    """The generated samples, and their DDIM trajectories when some method's targets need them."""
    outputs = [directory(out("samples/full.zarr"))]
    if TRAJECTORY_METHODS:
        outputs.append(directory(out("samples/full_trajectory.zarr")))
    return outputs


def trak_score_inputs(wildcards):
    """TRAK's train and target shards; a Journey-TRAK method's targets are its trajectory features."""
    method = wildcards.method
    targets = ensemble_shard_paths(method, wildcards.target_split)
    if kind_of(method).trajectories:
        if wildcards.target_split not in kind_of(method).splits:
            raise ValueError(
                f"diffattr: method '{method}' (kind {config['methods'][method]['kind']}) scores "
                f"{' and '.join(kind_of(method).splits)} targets only"
            )
        targets = [
            out(f"grads/journey/{method}/gen/{shard}.zarr")
            for shard in range(num_shards("gen"))
        ]
    return {
        "train": ensemble_shard_paths(method, "train"),
        "targets": targets,
        "subsets": out("subsets/lds.npz"),
        "outputs": lds_output_paths(),
    }


def final_targets():
    targets = []
    if config["lds"]["enabled"]:
        targets += [out("metrics/lds.csv"), out("metrics/dominating_norm.csv")]
    if SHAPLEY["enabled"]:
        targets += [sout("metrics/shapley_lds.csv")]
    if config["lds"]["enabled"] or SHAPLEY["enabled"]:
        targets += [out("report/index.html")]
    if config["lds"]["enabled"] and COUNTERFACTUAL["enabled"]:
        targets += [out("metrics/counterfactual.csv")]
    return targets


# Counterfactual evaluation (rules/counterfactual.smk): a few generated targets x (methods + random).
COUNTERFACTUAL = config["counterfactual"]


def counterfactual_methods():
    """The methods whose top-scored images are removed (all by default), then the random baseline."""
    return [*(COUNTERFACTUAL["methods"] or config["methods"]), "random"]


def counterfactual_jobs():
    """(method, slot) of every counterfactual retrain; slot j is the j-th reported generated target."""
    return [
        (method, j)
        for method in counterfactual_methods()
        for j in range(COUNTERFACTUAL["num_targets"])
    ]


# Empirical influence and datamodels (rules/datamodel.smk): retrains on their own subsets.
DATAMODEL = config["datamodel"]


def datamodel_output_paths():
    return retrain_output_paths("datamodel", retrain_models("datamodel"))


def counterfactual_spec(method, j):
    """What one counterfactual model needs: its method, target slot, scores file and random seed."""
    return {
        "method": method,
        "slot": j,
        "scores": None if method == "random" else out(f"scores/{method}/gen.zarr"),
        "random_seed": COUNTERFACTUAL["seed"] if method == "random" else None,
    }


def counterfactual_batch_inputs(jobs):
    """Data, held-out mask, the targets' seeds, and the generated-target scores of the methods in `jobs`."""
    specs = [counterfactual_spec(method, j) for method, j in jobs]
    return {
        "train": out("data/train.zarr"),
        "subsets": out("subsets/lds.npz"),
        "samples": out("samples/full.zarr"),
        "scores": sorted({s["scores"] for s in specs if s["scores"]}),
    }


def counterfactual_model_inputs(wildcards):
    return counterfactual_batch_inputs([(wildcards.cf_method, int(wildcards.j))])


def counterfactual_batches():
    """Counterfactual retrains grouped lds.models_per_job to a job (counterfactual_model_batch*)."""
    return batches(counterfactual_jobs(), config["lds"]["models_per_job"])


# The contributor-valuation branch (rules/unlearn.smk, rules/shapley.smk): outputs under shapley/.
SHAPLEY = config["shapley"]
SHAPLEY_DATA = SHAPLEY.get("data") or config["data"]
SHAPLEY_MODEL = SHAPLEY.get("model") or config["model"]
SHAPLEY_TRAIN = SHAPLEY.get("train") or config["train"]
SHAPLEY_SEED = SHAPLEY_TRAIN["seeds"][0]
HOWS = SHAPLEY["how"]
# The estimator's values, and the baselines fitted on coalitions of their own when there are some.
ESTIMATORS = list(
    dict.fromkeys(
        [SHAPLEY["estimator"]]
        + [
            name
            for name, estimator in ESTIMATOR_KINDS.items()
            if estimator.own_coalitions and SHAPLEY["datamodel"]["num_coalitions"]
        ]
    )
)


def sout(path):
    """A path inside this experiment's contributor-valuation folder."""
    return out(f"shapley/{path}")


FULL_MODEL = sout(f"models/coalition/retrain/full/seed{SHAPLEY_SEED}")
# The model each way starts from: the pruned model, the full model, or none (retraining).
BASE_MODELS = {
    "sparse_ft": sout("models/pruned"),
    "ft": FULL_MODEL,
    "gradient_ascent": FULL_MODEL,
    "retrain": None,
}


def num_contributors():
    """Known from the config alone, so that dry runs list every coalition job without data."""
    spec = SHAPLEY["contributors"]
    if spec["by"] == "random":
        return math.ceil(SHAPLEY_DATA["n_train"] / spec["group_size"])
    if spec["by"] == "class" and SHAPLEY_DATA["source"] != "image_folder":
        return len(SHAPLEY_DATA["classes"])
    return None


def num_fit_coalitions():
    if ESTIMATOR_KINDS[SHAPLEY["estimator"]].design != "leave_one_out":
        return SHAPLEY["num_coalitions"]
    if num_contributors() is None:
        sys.exit(
            "diffattr: config key 'shapley.estimator': loo needs a number of contributors known before "
            "the run (contributors by class of a labelled dataset, or by random groups)"
        )
    return num_contributors()


def fit_coalitions():
    """Coalitions whose models every way makes: the fit set, the datamodel baseline's own coalitions,
    the empty and the full coalition."""
    datamodel = [f"dm{i}" for i in range(SHAPLEY["datamodel"]["num_coalitions"])]
    return (
        [f"fit{i}" for i in range(num_fit_coalitions())] + datamodel + ["empty", "full"]
    )


def heldout_coalitions():
    return [f"heldout{i}" for i in range(SHAPLEY["heldout"]["num_coalitions"])]


def counterfactual_coalitions():
    return [f"{side}-{how}" for how in HOWS for side in ("top", "bottom")]


def property_path(how, c, seed):
    return sout(f"properties/{how}/{c}/seed{seed}.json")


def fit_property_paths(how):
    return [property_path(how, c, SHAPLEY_SEED) for c in fit_coalitions()]


def endpoint_property_paths(how):
    """v(empty) and v(full) of a way's values: the retrained models' (shapley.endpoints: retrain, Lu et
    al.'s) or the way's own empty and full coalition models (own)."""
    source = "retrain" if SHAPLEY["endpoints"] == "retrain" else how
    return [property_path(source, c, SHAPLEY_SEED) for c in ("empty", "full")]


def retrained_property_paths(coalitions):
    return [
        property_path("retrain", c, s)
        for c in coalitions
        for s in SHAPLEY["heldout"]["seeds"]
    ]


def coalition_train_config(how):
    """The optimisation schedule of one way: training from scratch, or fine-tuning / ascent steps and lr
    at a constant learning rate (Lu et al.'s code: Adam, constant schedule, no warm-up).
    """
    if how == "retrain":
        return SHAPLEY_TRAIN
    tuned = (
        SHAPLEY["finetune"]
        if how in ("sparse_ft", "ft")
        else SHAPLEY["gradient_ascent"]
    )
    return {
        **SHAPLEY_TRAIN,
        "steps": tuned["steps"],
        "epochs": None,
        "lr": tuned["lr"],
        "ema": tuned.get("ema", False),
        "checkpoints": 0,
        "lr_schedule": "constant",
        "warmup_fraction": 0.0,
    }


def coalition_model_inputs(wildcards):
    """The data, the coalitions, the way's base model, and for counterfactuals the values that rank."""
    inputs = {
        "train": sout("data/train.zarr"),
        "coalitions": sout("subsets/coalitions.npz"),
    }
    base = BASE_MODELS[wildcards.how]
    if base and wildcards.coalition != "empty":
        inputs["base"] = base
    side, _, ranked_by = wildcards.coalition.partition("-")
    if side in ("top", "bottom"):
        inputs["values"] = sout(f"values/{SHAPLEY['estimator']}-{ranked_by}.csv")
    return inputs


def feature_inputs():
    """The trained classifier, when it is the feature extractor of the property."""
    prop = SHAPLEY["property"]
    measured_with = PROPERTIES[prop["name"]].measured_with
    if measured_with == "features" and prop["features"] == "classifier":
        return {"classifier": sout("models/classifier")}
    return {}


def property_inputs(wildcards):
    inputs = {
        "model": sout(
            f"models/coalition/{wildcards.how}/{wildcards.coalition}/seed{wildcards.seed}"
        ),
        **feature_inputs(),
    }
    if PROPERTIES[SHAPLEY["property"]["name"]].needs_reference:
        inputs["reference"] = sout("properties/reference_features.npz")
    return inputs


def counterfactual_fraction(wildcards):
    """Only counterfactual coalitions depend on the fraction removed (others must not rerun with it)."""
    if wildcards.coalition.startswith(("top-", "bottom-")):
        return SHAPLEY["counterfactual"]["fraction"]
    return None


def coalition_model_groups():
    """Coalition models (how, coalition, seed) in groups that share their inputs and schedule: the fit
    models of each way (with the held-out retrains), and the counterfactual retrains of each ranking.
    """
    seeds = SHAPLEY["heldout"]["seeds"]
    groups = {how: [(how, c, SHAPLEY_SEED) for c in fit_coalitions()] for how in HOWS}
    groups.setdefault("retrain", []).extend(
        [("retrain", c, s) for c in heldout_coalitions() for s in seeds]
        + [("retrain", "full", s) for s in seeds if s != SHAPLEY_SEED]
    )
    for c in counterfactual_coalitions():
        ranked_by = c.partition("-")[2]
        groups.setdefault(f"counterfactual-{ranked_by}", []).extend(
            ("retrain", c, s) for s in seeds
        )
    return [list(dict.fromkeys(group)) for group in groups.values() if group]


def coalition_batches(models=True):
    """Coalition models (or their properties) grouped shapley.models_per_job to a job. The full model,
    which pruning and fine-tuning start from, keeps a job of its own so that they need not wait.
    """
    full = ("retrain", "full", SHAPLEY_SEED)
    return [
        batch
        for group in coalition_model_groups()
        for batch in batches(
            [m for m in group if not (models and m == full)],
            SHAPLEY["models_per_job"],
        )
    ]


def batch_wildcards(batch):
    """Each member of a batch as the wildcards of its own job, for the per-model input functions."""
    return [SimpleNamespace(how=h, coalition=c, seed=str(s)) for h, c, s in batch]


def batch_inputs(batch, inputs_of, own=None):
    """The union of a batch's members' inputs; each member's `own` input (its model) listed under `own`s."""
    merged, owned = {}, []
    for wc in batch_wildcards(batch):
        inputs = inputs_of(wc)
        if own is not None:
            owned.append(inputs.pop(own))
        merged.update(inputs)
    return {**merged, f"{own}s": owned} if own is not None else merged


def coalition_model_path(how, coalition, seed):
    return sout(f"models/coalition/{how}/{coalition}/seed{seed}")


wildcard_constraints:
    split="train|train_at_draws|val|gen",
    target_split="val|gen",
    shard=r"\d+",
    m=r"\d+",
    seed=r"\d+",
    featurizer=name_regex(config["featurizers"]),
    how="sparse_ft|ft|gradient_ascent|retrain",
    coalition=r"fit\d+|dm\d+|heldout\d+|empty|full|(top|bottom)-(sparse_ft|ft|gradient_ascent|retrain)",
    estimator=name_regex(ESTIMATOR_KINDS),


def gradient_store_bytes():
    """Disk taken by every featurizer's projected gradients (float32), for the up-front size notice."""
    rows = sum(split_size(split) for split in ["train", *TARGET_SPLITS])
    return {name: rows * f["dim"] * 4 for name, f in config["featurizers"].items()}


def check_before_jobs():
    """Input files and the GPU of the jobs about to run, once before the first (never in dry runs)."""
    rules = {job.rule.name for job in workflow.dag.needrun_jobs()}
    try:
        check_machine(config, rules, local=workflow.local_exec)
    except InputError as err:
        sys.exit(f"diffattr: {err}")


onstart:
    check_before_jobs()
    sizes = gradient_store_bytes()
    print(
        f"diffattr: gradient stores under {OUT}/grads: "
        + ", ".join(
            f"{name} {size / 2**20:.1f} MiB" for name, size in sizes.items()
        )
        + f" (total {sum(sizes.values()) / 2**30:.2f} GiB)",
        file=sys.stderr,
    )


# The one report (rules/report.smk, src/diffattr/report/): a section shows when its inputs are here.
def report_inputs():
    """Named inputs of the report: the results of every enabled branch."""
    inputs = {}
    if config["lds"]["enabled"]:
        inputs.update(
            lds=out("metrics/lds.csv"),
            gen_scores=[
                out(f"scores/{method}/gen.zarr") for method in config["methods"]
            ],
            samples=out("samples/full.zarr"),
            train=out("data/train.zarr"),
            subsets=out("subsets/lds.npz"),
            dominating_norm=out("metrics/dominating_norm.csv"),
        )
    if config["lds"]["enabled"] and COUNTERFACTUAL["enabled"]:
        inputs.update(
            counterfactual=out("metrics/counterfactual.csv"),
            counterfactual_summary=out("metrics/counterfactual_summary.csv"),
        )
    if SHAPLEY["enabled"]:
        inputs.update(
            values=expand(
                sout("values/{estimator}-{how}.csv"), estimator=ESTIMATORS, how=HOWS
            ),
            shapley_lds=sout("metrics/shapley_lds.csv"),
            agreement=sout("metrics/agreement.csv"),
            cost=sout("metrics/cost.csv"),
            contributor_counterfactual=sout("metrics/counterfactual.csv"),
            planted=sout("metrics/planted.csv"),
        )
        if "sparse_ft" in HOWS:
            inputs["pruned"] = BASE_MODELS["sparse_ft"]
    return inputs


# Figures the report draws itself -> the input they need; each has a caption workflow/report/{name}.rst.
REPORT_FIGURES = {
    "lds": "lds",
    "top_attributions": "gen_scores",
    "dominating_norm": "dominating_norm",
    "values": "values",
    "shapley_lds": "shapley_lds",
    "contributor_counterfactual": "contributor_counterfactual",
}


def report_figures():
    """The report's figures of this config, marked for `snakemake --report` with their captions."""
    from snakemake.io import report as mark_for_report

    inputs = report_inputs()
    return [
        mark_for_report(
            out(f"report/figures/{name}.png"),
            caption=f"../workflow/report/{name}.rst",
            category="Figures",
            labels={"figure": name},
        )
        for name, needs in REPORT_FIGURES.items()
        if needs in inputs
    ]


CONTRIBUTOR_RULE_FILES = ("unlearn.smk", "shapley.smk")


def rule_branches():
    """The branch of each stage of the report's timings (a rule's benchmark folder), by the file that
    defines the rule; the report itself has none."""
    branches = {}
    for r in workflow.rules:
        if r.name in ("report", "all"):
            continue
        stage = r.name
        if r.benchmark:
            stage = os.path.basename(os.path.dirname(str(r.benchmark)))
        contributor = os.path.basename(r.snakefile) in CONTRIBUTOR_RULE_FILES
        branches[stage] = "contributor branch" if contributor else "LDS branch"
    return branches

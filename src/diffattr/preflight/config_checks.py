"""Everything a validated config alone decides, checked when the workflow is parsed: dataset sizes,
schedules, fractions that round to nothing, image sizes a UNet round-trips, contributor counts."""

from __future__ import annotations

import math
from pathlib import Path

from diffattr.errors import InputError
from diffattr.paths import check_results_root
from diffattr.pretrained import num_train_timesteps, own_folder

# Images per class of the standard datasets: (training pool, validation pool); None = val is drawn
# from what the training split left (digits has a single pool).
# scikit-learn's load_digits().target counts (tests/test_bad_inputs.py checks them against scikit-learn).
DIGITS_CLASS_SIZES = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)
DATASETS = {
    "digits": {"classes": 10, "train": DIGITS_CLASS_SIZES, "val": None},
    "cifar10": {"classes": 10, "train": (5000,) * 10, "val": (1000,) * 10},
    "cifar100": {"classes": 100, "train": (500,) * 100, "val": (100,) * 100},
}
IMAGE_SIZES = {"digits": 8, "cifar10": 32, "cifar100": 32}


def per_class(n: int, n_classes: int) -> list[int]:
    """Split n as evenly as possible across classes, as diffattr.data.per_class_counts does."""
    return [n // n_classes + (1 if c < n % n_classes else 0) for c in range(n_classes)]


def check_config(config: dict, workdir: str | Path, repo_root: str | Path) -> None:
    """Everything about a validated config that is known before any data is read; InputError on the first."""
    check_results_root(config["results"], workdir, repo_root)
    lds, shapley = config["lds"], config["shapley"]
    # a user's own model (model.pretrained) brings its noise schedule; its folder is checked before any job
    timesteps = num_train_timesteps(config["model"]) or config["scheduler"]["num_train_timesteps"]
    if lds["enabled"]:
        _check_data("data", config["data"])
        _check_model("model", config["model"])
        _check_train("train", config["train"])
        _check_steps("lds.timesteps", lds["timesteps"], timesteps)
        _check_steps("generate.num_inference_steps", config["generate"]["num_inference_steps"], timesteps)
        _check_guidance(
            "generate.guidance_scale", config["generate"]["guidance_scale"], "model", config["model"]
        )
        for name, featurizer in config["featurizers"].items():
            _check_steps(f"featurizers.{name}.timesteps", featurizer["timesteps"], timesteps)
        _check_lds_fractions(config)
        _check_image_size("data", config["data"], "model", config["model"])
        _check_top_k(config)
        _check_feature_dims(config)
    if shapley["enabled"]:
        data_key = "shapley.data" if shapley.get("data") else "data"
        data = shapley.get("data") or config["data"]
        model_key = "shapley.model" if shapley.get("model") else "model"
        model = shapley.get("model") or config["model"]
        _check_data(data_key, data)
        _check_model(model_key, model)
        _check_image_size(data_key, data, model_key, model)
        if "sparse_ft" in shapley["how"]:
            _check_pruning(shapley["pruning"]["ratio"], model_key, model)
        _check_train(
            "shapley.train" if shapley.get("train") else "train", shapley.get("train") or config["train"]
        )
        _check_steps(
            "shapley.property.num_inference_steps", shapley["property"]["num_inference_steps"], timesteps
        )
        _check_guidance(
            "shapley.property.guidance_scale", shapley["property"]["guidance_scale"], model_key, model
        )
        _check_contributors(shapley, data, data_key)
        _check_property(shapley, data, data_key)


def _check_data(key: str, data: dict) -> None:
    """Classes exist and each has enough images for the stratified train and val picks."""
    known = DATASETS.get(data["source"])
    if known is None:  # image_folder: sizes come from its CSV, checked before the first job
        return
    classes = data["classes"]
    missing = [c for c in classes if c >= known["classes"]]
    if missing:
        raise InputError(
            f"config key '{key}.classes': class {missing[0]} does not exist in {data['source']} "
            f"(classes 0-{known['classes'] - 1})"
        )
    train, val = per_class(data["n_train"], len(classes)), per_class(data["n_val"], len(classes))
    for cls, n_tr, n_va in zip(classes, train, val, strict=True):
        size = known["train"][cls]
        if n_tr > size:
            raise InputError(
                f"config key '{key}.n_train': {data['n_train']} images over {len(classes)} classes need "
                f"{n_tr} of class {cls}, which has {size} in {data['source']}"
            )
        pool, note = (
            (size - n_tr, f" left after {n_tr} training images")
            if known["val"] is None
            else (
                known["val"][cls],
                "",
            )
        )
        if n_va > pool:
            raise InputError(
                f"config key '{key}.n_val': {data['n_val']} validation images over {len(classes)} classes "
                f"need {n_va} of class {cls}, which has {pool}{note} in {data['source']}"
            )


def _check_model(key: str, model: dict) -> None:
    """GroupNorm groups divide every level's channels; attention heads divide attention levels' channels.
    A user's own model (model.pretrained) has its folder's architecture instead, checked before any job."""
    if own_folder(model):
        return
    groups = model["norm_num_groups"]
    for channels in model["block_out_channels"]:
        if channels % groups:
            raise InputError(
                f"config key '{key}.norm_num_groups': {groups} groups do not divide {channels} channels "
                f"of '{key}.block_out_channels' {model['block_out_channels']}"
            )
    head = model["attention_head_dim"]
    for channels, block in zip(model["block_out_channels"], model["down_block_types"], strict=False):
        if head is not None and block.startswith("Attn") and channels % head:
            raise InputError(
                f"config key '{key}.attention_head_dim': {head} does not divide the {channels} channels "
                f"of an attention level"
            )


def _check_train(key: str, train: dict) -> None:
    if train.get("steps") is None and train.get("epochs") is None:
        raise InputError(f"config keys '{key}.steps' and '{key}.epochs': both null; set one of them")


def _image_side(data: dict) -> tuple[str, int] | None:
    """(config key or dataset, side in pixels) of a data section's images; None for an unset folder."""
    if data["source"] in IMAGE_SIZES:
        return data["source"], IMAGE_SIZES[data["source"]]
    if data.get("image_folder"):
        return "image_folder.image_size", data["image_folder"]["image_size"]
    return None


def image_shape(data: dict) -> tuple[int, int, int] | None:
    """(C, H, W) of a data section's images (digits grayscale, the others RGB); None for an unset folder."""
    side = _image_side(data)
    if side is None:
        return None
    return (1 if data["source"] == "digits" else 3, side[1], side[1])


def _check_image_size(data_key: str, data: dict, model_key: str, model: dict) -> None:
    """A pixel UNet halves the image at every level but the last and doubles it back: the side must be a
    multiple of 2^(levels - 1), or the skip connections of the up path do not match."""
    side = _image_side(data)
    if model.get("family", "pixel") != "pixel" or side is None or own_folder(model):
        return
    where, size = side
    levels = len(model["block_out_channels"])
    factor = 2 ** (levels - 1)
    if size % factor:
        path = [size]
        for _ in range(levels - 1):
            path.append(math.ceil(path[-1] / 2))
        source = f"'{data_key}.{where}' {size}" if "." in where else f"{where} images of {size}x{size}"
        raise InputError(
            f"config key '{model_key}.block_out_channels': {levels} levels halve {source} as "
            f"{' -> '.join(map(str, path))}, which the up path cannot double back; "
            f"the image side must be a multiple of {factor} (or use fewer levels)"
        )


def _check_top_k(config: dict) -> None:
    top_k, n_train = config["evaluate"]["top_k"], config["data"]["n_train"]
    if top_k > n_train:
        raise InputError(
            f"config key 'evaluate.top_k': {top_k} is more than the {n_train} training images (data.n_train)"
        )


def unet_parameters(model: dict, channels: int) -> int:
    """Parameters of the pixel family's diffusers UNet2DModel, counted from its config without building it
    (diffusers takes seconds to import); tests/test_models.py checks the count against diffusers."""
    c, layers, head = model["block_out_channels"], model["layers_per_block"], model["attention_head_dim"]
    temb = 4 * c[0]
    shift = 2 if model["resnet_time_scale_shift"] == "scale_shift" else 1

    def resnet(cin: int, cout: int) -> int:
        shortcut = cin * cout + cout if cin != cout else 0
        norms, convs = 2 * cin + 2 * cout, 9 * cin * cout + cout + 9 * cout * cout + cout
        return norms + convs + temb * shift * cout + shift * cout + shortcut

    def attention(width: int, norm: bool = True) -> int:
        inner = width // head * head if head else width  # null: one head as wide as the level
        return (2 * width if norm else 0) + 3 * (width * inner + inner) + inner * width + width

    conv = 9 * channels * c[0] + c[0] + 2 * c[0] + 9 * c[0] * channels + channels  # in, out norm, out
    total = conv + c[0] * temb + temb + temb * temb + temb
    for i, block in enumerate(model["down_block_types"]):
        cin = c[i - 1] if i else c[0]
        for j in range(layers):
            total += resnet(cin if j == 0 else c[i], c[i])
            total += attention(c[i]) if block.startswith("Attn") else 0
        total += 9 * c[i] * c[i] + c[i] if i < len(c) - 1 else 0
    total += 2 * resnet(c[-1], c[-1]) + attention(c[-1], norm=shift == 1)
    up = c[::-1]
    for i, block in enumerate(model["up_block_types"]):
        prev, out, cin = up[i - 1] if i else up[0], up[i], up[min(i + 1, len(c) - 1)]
        for j in range(layers + 1):
            skip = cin if j == layers else out
            total += resnet((prev if j == 0 else out) + skip, out)
            total += attention(out) if block.startswith("Attn") else 0
        total += 9 * out * out + out if i < len(c) - 1 else 0
    return total


def _check_feature_dims(config: dict) -> None:
    """A projection to more dimensions than the model has parameters is no compression: refused."""
    model = config["model"]
    if model.get("family", "pixel") != "pixel" or own_folder(model):
        return  # latent, LoRA and own models' parameter counts depend on their files
    params = unet_parameters(model, 1 if config["data"]["source"] == "digits" else 3)
    for name, featurizer in config["featurizers"].items():
        dim = featurizer["dim"]
        if dim > params:
            raise InputError(
                f"config key 'featurizers.{name}.dim': {dim} is more than the {params} parameters of the "
                "model; the projection would enlarge the gradients, not compress them"
            )


def _check_pruning(ratio: float, model_key: str, model: dict) -> None:
    """Every GroupNorm group keeps at least one channel, so a UNet level of c channels in g groups loses at
    most 1 - g / c of them; a ratio above that for the widest level cannot be reached: refused."""
    if model.get("family", "pixel") == "lora" or own_folder(model):
        return  # LoRA adapters are pruned by rank pairs; an own model's levels are its folder's
    groups, widest = model["norm_num_groups"], max(model["block_out_channels"])
    reachable = 1 - groups / widest
    if ratio > reachable:
        raise InputError(
            f"config key 'shapley.pruning.ratio': {ratio} cannot be reached on '{model_key}': every "
            f"GroupNorm group keeps a channel, so even its widest level ({widest} channels, {groups} groups) "
            f"loses at most {reachable:g}"
        )


def _check_property(shapley: dict, data: dict, data_key: str) -> None:
    """The property's classifier has labels to learn, CLIP features are not asked for label probabilities,
    and diversity's clusters have enough images."""
    prop = shapley["property"]
    if prop["features"] == "clip" and prop["name"] in ("inception_score", "entropy"):
        raise InputError(
            f"config key 'shapley.property.features': 'clip' gives embeddings, not the label probabilities "
            f"that {prop['name']} needs; use inception or classifier"
        )
    if prop["name"] != "aesthetic" and prop["features"] == "classifier" and data["source"] == "image_folder":
        if data.get("image_folder") and not data["image_folder"].get("label_column"):
            raise InputError(
                f"config key 'shapley.property.features': 'classifier' is trained on the labels of "
                f"{data_key}, which has none (no '{data_key}.image_folder.label_column'); set one, or use "
                "features: inception"
            )
    if prop["name"] == "diversity" and prop["clusters"] > data["n_train"]:
        raise InputError(
            f"config key 'shapley.property.clusters': {prop['clusters']} clusters need at least as many "
            f"reference images, '{data_key}.n_train' is {data['n_train']}"
        )


def _check_steps(key: str, steps: int, num_train_timesteps: int) -> None:
    if steps > num_train_timesteps:
        raise InputError(
            f"config key '{key}': {steps} is more than scheduler.num_train_timesteps "
            f"({num_train_timesteps}); timesteps would repeat"
        )


def _check_guidance(key: str, scale: float | None, model_key: str, model: dict) -> None:
    """Classifier-free guidance (a scale other than null or 1) only for a text-conditioned family."""
    family = model.get("family", "pixel")
    if scale not in (None, 1) and family != "lora":
        raise InputError(
            f"config key '{key}': guidance {scale} needs a text-conditioned model; '{model_key}.family' is "
            f"{family!r} (only lora is; null or 1 = no guidance)"
        )


def _check_lds_fractions(config: dict) -> None:
    """Held-out targets and LDS subsets are neither empty nor everything."""
    lds, data = config["lds"], config["data"]
    fraction = lds["heldout_fraction"]
    for split, n in (("val", data["n_val"]), ("gen", config["generate"]["num_images"])):
        held = int(round(fraction * n))
        if held == 0 or held == n:
            what = "no target to choose the damping on" if held == 0 else "no target to report the LDS on"
            raise InputError(
                f"config key 'lds.heldout_fraction': {fraction} of the {n} {split} targets is {held}, "
                f"which leaves {what}"
            )
    if data["source"] == "image_folder":
        sizes = [data["n_train"]]  # classes unknown before the CSV is read; check the whole set
    else:
        sizes = per_class(data["n_train"], len(data["classes"]))
    kept = [int(round(lds["alpha"] * n)) for n in sizes]
    if sum(kept) == 0:
        raise InputError(
            f"config key 'lds.alpha': {lds['alpha']} of classes of {max(sizes)} images keeps none, "
            "so every LDS subset is empty"
        )
    if kept == sizes:
        raise InputError(
            f"config key 'lds.alpha': {lds['alpha']} of classes of {min(sizes)} images keeps all of them, "
            "so every LDS subset is the full training set"
        )


def _num_contributors(shapley: dict, data: dict, data_key: str) -> int | None:
    spec = shapley["contributors"]
    if spec["by"] == "random":
        if spec["group_size"] > data["n_train"]:
            raise InputError(
                f"config key 'shapley.contributors.group_size': {spec['group_size']} is more than "
                f"'{data_key}.n_train' ({data['n_train']})"
            )
        return math.ceil(data["n_train"] / spec["group_size"])
    if spec["by"] == "class":
        if data["source"] != "image_folder":
            return len(data["classes"])
        if not (data.get("image_folder") or {}).get("label_column"):
            return 1
    return None


def _check_contributors(shapley: dict, data: dict, data_key: str) -> None:
    """At least two contributors; held-out and counterfactual fractions keep and remove someone."""
    n = _num_contributors(shapley, data, data_key)
    if n is None:
        return
    if n < 2:
        raise InputError(
            f"config key 'shapley.contributors': {n} contributor from {data_key} "
            f"(by {shapley['contributors']['by']}); Shapley values need at least 2"
        )
    check_planted(shapley["contributors"]["planted"]["ids"], n)
    alpha = shapley["heldout"]["alpha"]
    kept = int(round(alpha * n))
    if kept in (0, n):
        raise InputError(
            f"config key 'shapley.heldout.alpha': {alpha} of {n} contributors keeps {kept}, so every "
            "held-out coalition is the same"
        )
    fraction = shapley["counterfactual"]["fraction"]
    if int(round(fraction * n)) == 0:
        raise InputError(
            f"config key 'shapley.counterfactual.fraction': {fraction} of {n} contributors removes none"
        )


def check_planted(ids: list[int], n: int, where: str = "") -> None:
    """Planted ids are rows of contributors.csv (0..n-1; at most n for contributors counted in a CSV)."""
    outside = [i for i in ids if i >= n]
    if outside:
        raise InputError(
            f"config key 'shapley.contributors.planted.ids': {outside} name no contributor; there are {n}"
            f"{where} (ids 0-{n - 1})"
        )

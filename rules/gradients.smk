# Gradients: projected per-sample gradients of the full model, one job per shard of a split (or per batch of a featurizer's shards).


rule featurize:
    input:
        unpack(lambda wc: {wc.split: split_images(wc.split)}),
        model=out(f"models/full/seed{FULL_SEED}"),
    output:
        directory(out("grads/{featurizer}/{split}/{shard}.zarr")),
    log:
        log_path("featurize", "{featurizer}-{split}-{shard}"),
    benchmark:
        bench_path("featurize", "{featurizer}-{split}-{shard}")
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        gpu=GPU_RULE_GPUS,
        mem_mb=config["resources"]["gpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        featurizer=lambda wc: config["featurizers"][wc.featurizer],
        shards=lambda wc: [
            {"checkpoint": None, "split": wc.split, "shard": int(wc.shard)}
        ],
        shard_size=config["featurize"]["shard_size"],
        batch_size=config["featurize"]["batch_size"],
        device=config["device"],
    script:
        "../scripts/featurize.py"


# The same featurizer on another model of a method's ensemble: a full model of another seed (seed{s}) or a
# model retrained on a random subset of section datamodel (subset{m}).
rule featurize_member:
    input:
        unpack(lambda wc: {wc.split: split_images(wc.split)}),
        model=lambda wc: member_model(wc.member),
    output:
        directory(out("grads/{featurizer}/{member}/{split}/{shard}.zarr")),
    log:
        log_path("featurize_member", "{featurizer}-{member}-{split}-{shard}"),
    benchmark:
        bench_path("featurize_member", "{featurizer}-{member}-{split}-{shard}")
    wildcard_constraints:
        member=r"seed\d+|subset\d+",
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        gpu=GPU_RULE_GPUS,
        mem_mb=config["resources"]["gpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        featurizer=lambda wc: config["featurizers"][wc.featurizer],
        shards=lambda wc: [
            {"checkpoint": None, "split": wc.split, "shard": int(wc.shard)}
        ],
        shard_size=config["featurize"]["shard_size"],
        batch_size=config["featurize"]["batch_size"],
        device=config["device"],
    script:
        "../scripts/featurize.py"


# The same featurizer at the full model's saved training checkpoints (TracIn, ReTrac): checkpoint c is
# the c-th entry of the model's training.json, which also holds the lrs that weight it (checkpoint_weights).
rule featurize_checkpoint:
    input:
        unpack(lambda wc: {wc.split: split_images(wc.split)}),
        model=out(f"models/full/seed{FULL_SEED}"),
    output:
        directory(out("grads/{featurizer}/ckpt{c}/{split}/{shard}.zarr")),
    log:
        log_path("featurize_checkpoint", "{featurizer}-ckpt{c}-{split}-{shard}"),
    benchmark:
        bench_path("featurize_checkpoint", "{featurizer}-ckpt{c}-{split}-{shard}")
    wildcard_constraints:
        c=r"\d+",
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        gpu=GPU_RULE_GPUS,
        mem_mb=config["resources"]["gpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        featurizer=lambda wc: config["featurizers"][wc.featurizer],
        shard_size=config["featurize"]["shard_size"],
        batch_size=config["featurize"]["batch_size"],
        device=config["device"],
        shards=lambda wc: [
            {"checkpoint": int(wc.c), "split": wc.split, "shard": int(wc.shard)}
        ],
    script:
        "../scripts/featurize.py"


# With featurize.shards_per_job > 1, one job computes a batch of one featurizer's shards of one model (the
# full model, its checkpoints, or an ensemble member) in turn, each into its own output; Snakemake prefers
# these wildcard-free rules to featurize / featurize_checkpoint / featurize_member for the shards they list.
for stage in ("featurize", "featurize_checkpoint", "featurize_member"):
    for b, (featurizer_name, model, batch) in enumerate(featurize_batches(stage)):

        rule:
            name:
                f"{stage}_batch{b}"
            input:
                **{split: split_images(split) for _, split, _, _ in batch},
                model=model,
            output:
                [directory(path) for _, _, _, path in batch],
            log:
                log_path(stage, f"batch{b}"),
            benchmark:
                bench_path(stage, f"batch{b}")
            conda:
                "../envs/diffattr.yaml"
            threads: config["threads"]
            resources:
                gpu=GPU_RULE_GPUS,
                mem_mb=config["resources"]["gpu_mem_mb"],
                runtime=config["resources"]["runtime"] * len(batch),
            params:
                featurizer=config["featurizers"][featurizer_name],
                shards=[
                    {"checkpoint": c, "split": split, "shard": shard}
                    for c, split, shard, _ in batch
                ],
                shard_size=config["featurize"]["shard_size"],
                batch_size=config["featurize"]["batch_size"],
                device=config["device"],
            script:
                "../scripts/featurize.py"


# DAS's training residuals: the full model's error on each training image at a featurizer's timesteps,
# with that featurizer's fixed noise.
rule das_residuals:
    input:
        model=out(f"models/full/seed{FULL_SEED}"),
        train=out("data/train.zarr"),
    output:
        out("residuals/{featurizer}.npz"),
    log:
        log_path("das_residuals", "{featurizer}"),
    benchmark:
        bench_path("das_residuals", "{featurizer}")
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        gpu=GPU_RULE_GPUS,
        mem_mb=config["resources"]["gpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        timesteps=lambda wc: config["featurizers"][wc.featurizer]["timesteps"],
        noise_seed=lambda wc: config["featurizers"][wc.featurizer]["noise_seed"],
        batch_size=config["lds"]["batch_size"],
        device=config["device"],
    script:
        "../scripts/das_residuals.py"

# Gradients: projected per-sample gradients of the full model, one job per shard of a split.


rule featurize:
    input:
        model=out(f"models/full/seed{FULL_SEED}"),
        images=lambda wc: split_images(wc.split),
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
        shard_size=config["featurize"]["shard_size"],
        batch_size=config["featurize"]["batch_size"],
        device=config["device"],
    script:
        "../scripts/featurize.py"


# The same featurizer on another independently trained full model: a member of a method's ensemble.
rule featurize_member:
    input:
        model=out("models/full/seed{seed}"),
        images=lambda wc: split_images(wc.split),
    output:
        directory(out("grads/{featurizer}/seed{seed}/{split}/{shard}.zarr")),
    log:
        log_path("featurize_member", "{featurizer}-seed{seed}-{split}-{shard}"),
    benchmark:
        bench_path("featurize_member", "{featurizer}-seed{seed}-{split}-{shard}")
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
    script:
        "../scripts/featurize.py"


# The same featurizer at the full model's saved training checkpoints (TracIn, ReTrac): checkpoint c is
# the c-th entry of the model's training.json, whose learning rate weights it.
rule featurize_checkpoint:
    input:
        model=out(f"models/full/seed{FULL_SEED}"),
        images=lambda wc: split_images(wc.split),
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
        checkpoint=lambda wc: int(wc.c),
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

# Training: the full model (attributed, generates the targets) and one model per LDS subset and seed.


rule train_full:
    input:
        train=out("data/train.zarr"),
    output:
        directory(out("models/full/seed{seed}")),
    log:
        log_path("train_full", "seed{seed}"),
    benchmark:
        bench_path("train_full", "seed{seed}")
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        gpu=GPU_RULE_GPUS,
        mem_mb=config["resources"]["gpu_mem_mb"],
        runtime=config["resources"]["train_runtime"],
    params:
        model=config["model"],
        scheduler=config["scheduler"],
        # checkpoints (and each image's training draws) for TracIn / ReTrac: the attributed model's only
        train=lambda wc: (
            config["train"]
            if int(wc.seed) == FULL_SEED
            else {**config["train"], "checkpoints": 0}
        ),
        device=config["device"],
        models=lambda wc: [{"subset": None, "seed": int(wc.seed)}],
    script:
        "../scripts/train.py"


rule train_lds:
    input:
        train=out("data/train.zarr"),
        subsets=out("subsets/lds.npz"),
    output:
        directory(out("models/lds/{m}/seed{seed}")),
    log:
        log_path("train_lds", "{m}-seed{seed}"),
    benchmark:
        bench_path("train_lds", "{m}-seed{seed}")
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        gpu=GPU_RULE_GPUS,
        mem_mb=config["resources"]["gpu_mem_mb"],
        runtime=config["resources"]["train_runtime"],
    params:
        model=config["model"],
        scheduler=config["scheduler"],
        train={**config["train"], "checkpoints": 0},  # no TracIn checkpoints of LDS models
        device=config["device"],
        models=lambda wc: [{"subset": int(wc.m), "seed": int(wc.seed)}],
    script:
        "../scripts/train.py"


# With lds.models_per_job > 1, one job trains a batch of LDS (or datamodel) retrains in turn, each into its
# own directory; Snakemake prefers these wildcard-free rules to train_lds / train_datamodel for those models.
for branch, b, batch in retrain_batches():

    rule:
        name:
            f"train_{branch}_batch{b}"
        input:
            train=out("data/train.zarr"),
            subsets=out(f"subsets/{branch}.npz"),
        output:
            [directory(p) for p in retrain_model_paths(branch, batch)],
        log:
            log_path(f"train_{branch}", f"batch{b}"),
        benchmark:
            bench_path(f"train_{branch}", f"batch{b}")
        conda:
            "../envs/diffattr.yaml"
        threads: config["threads"]
        resources:
            gpu=GPU_RULE_GPUS,
            mem_mb=config["resources"]["gpu_mem_mb"],
            runtime=config["resources"]["train_runtime"] * len(batch),
        params:
            model=config["model"],
            scheduler=config["scheduler"],
            train={**config["train"], "checkpoints": 0},  # no TracIn checkpoints of retrains
            device=config["device"],
            models=[{"subset": m, "seed": s} for m, s in batch],
        script:
            "../scripts/train.py"


# With a user's own trained model (model.pretrained, pixel / latent), the full model of the first train
# seed is that model, loaded, checked and saved in place (Snakemake prefers this wildcard-free rule to
# train_full); retrains still train, of its folder's architecture and noise schedule.
if OWN_MODEL:

    rule pretrained_full:
        input:
            train=out("data/train.zarr"),
        output:
            directory(out(f"models/full/seed{FULL_SEED}")),
        log:
            log_path("pretrained_full"),
        benchmark:
            bench_path("pretrained_full")
        conda:
            "../envs/diffattr.yaml"
        resources:
            mem_mb=config["resources"]["cpu_mem_mb"],
            runtime=config["resources"]["runtime"],
        params:
            model=config["model"],
        script:
            "../scripts/pretrained_full.py"

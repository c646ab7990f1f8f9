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
        train=config["train"],
        device=config["device"],
        subset=None,
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
        train=config["train"],
        device=config["device"],
        subset=lambda wc: int(wc.m),
    script:
        "../scripts/train.py"

# Empirical influence and datamodels: fitted on models retrained on their own random subsets
# (subsets/datamodel.npz, seed datamodel.seed), never on the LDS evaluation subsets.


rule datamodel_subsets:
    input:
        train=out("data/train.zarr"),
        lds=out("subsets/lds.npz"),
    output:
        out("subsets/datamodel.npz"),
    log:
        log_path("datamodel_subsets"),
    benchmark:
        bench_path("datamodel_subsets")
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        # only what draws the subsets: a scoring option of section datamodel reruns no retrain
        datamodel={k: DATAMODEL[k] for k in ("num_subsets", "alpha", "seed")},
    script:
        "../scripts/datamodel_subsets.py"


rule train_datamodel:
    input:
        train=out("data/train.zarr"),
        subsets=out("subsets/datamodel.npz"),
    output:
        directory(out("models/datamodel/{m}/seed{seed}")),
    log:
        log_path("train_datamodel", "{m}-seed{seed}"),
    benchmark:
        bench_path("train_datamodel", "{m}-seed{seed}")
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
        train={**config["train"], "checkpoints": 0},
        device=config["device"],
        models=lambda wc: [{"subset": int(wc.m), "seed": int(wc.seed)}],
    script:
        "../scripts/train.py"


rule datamodel_outputs:
    input:
        models=[out("models/datamodel/{m}/seed{seed}")],
        val=split_images("val"),
        gen=split_images("gen"),
    output:
        out("outputs/datamodel/{m}/seed{seed}.npz"),
    log:
        log_path("datamodel_outputs", "{m}-seed{seed}"),
    benchmark:
        bench_path("datamodel_outputs", "{m}-seed{seed}")
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        gpu=GPU_RULE_GPUS,
        mem_mb=config["resources"]["gpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        lds=LDS_PARAMS,
        device=config["device"],
        models=lambda wc: [{"subset": int(wc.m), "seed": int(wc.seed)}],
    script:
        "../scripts/lds_outputs.py"


rule datamodel_scores:
    input:
        datamodel_subsets=out("subsets/datamodel.npz"),
        datamodel_outputs=datamodel_output_paths(),
        subsets=out("subsets/lds.npz"),
        outputs=lds_output_paths(),
    output:
        directory(out("scores/{method}/{target_split}.zarr")),
    log:
        log_path("datamodel_scores", "{method}-{target_split}"),
    benchmark:
        bench_path("datamodel_scores", "{method}-{target_split}")
    wildcard_constraints:
        method=name_regex(methods_scored_by("datamodel_scores")),
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        kind=lambda wc: config["methods"][wc.method]["kind"],
        datamodel=DATAMODEL,
    script:
        "../scripts/datamodel_scores.py"

# Evaluation: each retrained model's measured loss on every target, and the LDS of every method.


rule lds_outputs:
    input:
        models=[out("models/lds/{m}/seed{seed}")],
        val=split_images("val"),
        gen=split_images("gen"),
    output:
        out("outputs/lds/{m}/seed{seed}.npz"),
    log:
        log_path("lds_outputs", "{m}-seed{seed}"),
    benchmark:
        bench_path("lds_outputs", "{m}-seed{seed}")
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


# With lds.models_per_job > 1, one job measures a batch of LDS (or datamodel) retrains, each into its file.
for branch, b, batch in retrain_batches():

    rule:
        name:
            f"{branch}_outputs_batch{b}"
        input:
            models=retrain_model_paths(branch, batch),
            val=split_images("val"),
            gen=split_images("gen"),
        output:
            retrain_output_paths(branch, batch),
        log:
            log_path(f"{branch}_outputs", f"batch{b}"),
        benchmark:
            bench_path(f"{branch}_outputs", f"batch{b}")
        conda:
            "../envs/diffattr.yaml"
        threads: config["threads"]
        resources:
            gpu=GPU_RULE_GPUS,
            mem_mb=config["resources"]["gpu_mem_mb"],
            runtime=config["resources"]["runtime"] * len(batch),
        params:
            lds=LDS_PARAMS,
            device=config["device"],
            models=[{"subset": m, "seed": s} for m, s in batch],
        script:
            "../scripts/lds_outputs.py"


rule lds:
    input:
        scores=score_paths(),
        subsets=out("subsets/lds.npz"),
        outputs=lds_output_paths(),
    output:
        summary=report(
            out("metrics/lds.csv"),
            caption="../workflow/report/lds_table.rst",
            category="Tables",
            labels={"table": "LDS"},
        ),
        per_target=out("metrics/lds_per_target.csv"),
    log:
        log_path("lds"),
    benchmark:
        bench_path("lds")
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        methods=list(config["methods"]),
        splits={m: method_splits(m) for m in config["methods"]},
        train_seeds=config["lds"]["train_seeds"],
        evaluate=config["evaluate"],
    script:
        "../scripts/lds.py"


# The dominating-norm diagnostic of every method: distinct training images in the reported targets' top-k.
rule dominating_norm:
    input:
        scores=score_paths(),
        subsets=out("subsets/lds.npz"),
    output:
        report(
            out("metrics/dominating_norm.csv"),
            caption="../workflow/report/dominating_norm_table.rst",
            category="Tables",
            labels={"table": "dominating norm"},
        ),
    log:
        log_path("dominating_norm"),
    benchmark:
        bench_path("dominating_norm")
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        methods=list(config["methods"]),
        splits={m: method_splits(m) for m in config["methods"]},
        top_k=config["evaluate"]["top_k"],
    script:
        "../scripts/dominating_norm.py"

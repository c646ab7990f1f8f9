# Models of coalitions of contributors: the pruned model, and one model per (way, coalition, seed).


rule prune:
    input:
        train=sout("data/train.zarr"),
        full=FULL_MODEL,
    output:
        directory(sout("models/pruned")),
    log:
        log_path("prune"),
    benchmark:
        bench_path("prune")
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        gpu=GPU_RULE_GPUS,
        mem_mb=config["resources"]["gpu_mem_mb"],
        runtime=config["resources"]["train_runtime"],
    params:
        pruning=SHAPLEY["pruning"],
        train={
            **coalition_train_config("sparse_ft"),
            "steps": SHAPLEY["pruning"]["steps"],
            "lr": SHAPLEY["pruning"]["lr"],
        },
        seed=SHAPLEY_SEED,
        device=config["device"],
    script:
        "../scripts/prune.py"


rule coalition_model:
    input:
        unpack(coalition_model_inputs),
    output:
        directory(sout("models/coalition/{how}/{coalition}/seed{seed}")),
    log:
        log_path("coalition_model", "{how}-{coalition}-seed{seed}"),
    benchmark:
        bench_path("coalition_model", "{how}-{coalition}-seed{seed}")
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        gpu=GPU_RULE_GPUS,
        mem_mb=config["resources"]["gpu_mem_mb"],
        runtime=config["resources"]["train_runtime"],
    params:
        model=SHAPLEY_MODEL,
        scheduler=config["scheduler"],
        train=lambda wc: coalition_train_config(wc.how),
        fraction=counterfactual_fraction,
        device=config["device"],
    script:
        "../scripts/coalition_model.py"

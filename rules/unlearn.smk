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
        models=lambda wc: [
            {"how": wc.how, "coalition": wc.coalition, "seed": int(wc.seed)}
        ],
    script:
        "../scripts/coalition_model.py"


# With shapley.models_per_job > 1, one job makes a batch of coalition models (one way, one kind of
# coalition) in turn, each into its own directory; Snakemake prefers these to coalition_model.
for b, batch in enumerate(coalition_batches()):

    rule:
        name:
            f"coalition_model_batch{b}"
        input:
            unpack(lambda wc, batch=batch: batch_inputs(batch, coalition_model_inputs)),
        output:
            [directory(coalition_model_path(*m)) for m in batch],
        log:
            log_path("coalition_model", f"batch{b}"),
        benchmark:
            bench_path("coalition_model", f"batch{b}")
        conda:
            "../envs/diffattr.yaml"
        threads: config["threads"]
        resources:
            gpu=GPU_RULE_GPUS,
            mem_mb=config["resources"]["gpu_mem_mb"],
            runtime=config["resources"]["train_runtime"] * len(batch),
        params:
            model=SHAPLEY_MODEL,
            scheduler=config["scheduler"],
            train=coalition_train_config(batch[0][0]),
            fraction=counterfactual_fraction(batch_wildcards(batch)[0]),
            device=config["device"],
            models=[{"how": h, "coalition": c, "seed": s} for h, c, s in batch],
        script:
            "../scripts/coalition_model.py"

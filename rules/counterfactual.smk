# Counterfactual evaluation (D-TRAK's protocol): for each of a few generated targets and each method (and
# random), retrain without the target's top-scored training images and regenerate it from its own seed.


rule counterfactual_model:
    input:
        unpack(counterfactual_model_inputs),
    output:
        models=directory(out("models/counterfactual/{cf_method}/target{j}")),
        samples=out("counterfactual/{cf_method}/target{j}.npz"),
    log:
        log_path("counterfactual_model", "{cf_method}-target{j}"),
    benchmark:
        bench_path("counterfactual_model", "{cf_method}-target{j}")
    wildcard_constraints:
        cf_method=name_regex(counterfactual_methods()),
        j=r"\d+",
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        gpu=GPU_RULE_GPUS,
        mem_mb=config["resources"]["gpu_mem_mb"],
        runtime=config["resources"]["train_runtime"],
    params:
        num_removed=COUNTERFACTUAL["remove"],
        random_seed=lambda wc: (
            COUNTERFACTUAL["seed"] if wc.cf_method == "random" else None
        ),
        model=config["model"],
        scheduler=config["scheduler"],
        train={**config["train"], "checkpoints": 0},
        generate=config["generate"],
        seed=FULL_SEED,
        device=config["device"],
    script:
        "../scripts/counterfactual_model.py"


# With lds.models_per_job > 1, one job makes a batch of counterfactual models in turn, each into its own
# outputs; Snakemake prefers these wildcard-free rules to counterfactual_model for the models they list.
for b, batch in enumerate(counterfactual_batches()):

    rule:
        name:
            f"counterfactual_model_batch{b}"
        input:
            unpack(lambda wc, batch=batch: counterfactual_batch_inputs(batch)),
        output:
            models=[
                directory(out(f"models/counterfactual/{method}/target{j}"))
                for method, j in batch
            ],
            samples=[
                out(f"counterfactual/{method}/target{j}.npz") for method, j in batch
            ],
        log:
            log_path("counterfactual_model", f"batch{b}"),
        benchmark:
            bench_path("counterfactual_model", f"batch{b}")
        conda:
            "../envs/diffattr.yaml"
        threads: config["threads"]
        resources:
            gpu=GPU_RULE_GPUS,
            mem_mb=config["resources"]["gpu_mem_mb"],
            runtime=config["resources"]["train_runtime"] * len(batch),
        params:
            models=[counterfactual_spec(method, j) for method, j in batch],
            num_removed=COUNTERFACTUAL["remove"],
            model=config["model"],
            scheduler=config["scheduler"],
            train={**config["train"], "checkpoints": 0},
            generate=config["generate"],
            seed=FULL_SEED,
            device=config["device"],
        script:
            "../scripts/counterfactual_model.py"


rule counterfactual:
    input:
        samples=out("samples/full.zarr"),
        counterfactuals=[
            out(f"counterfactual/{method}/target{j}.npz")
            for method, j in counterfactual_jobs()
        ],
    output:
        per_target=out("metrics/counterfactual.csv"),
        summary=out("metrics/counterfactual_summary.csv"),
        figure=out("report/figures/counterfactual.png"),
    log:
        log_path("counterfactual"),
    benchmark:
        bench_path("counterfactual")
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        jobs=counterfactual_jobs(),
        clip=config["clip"],
        evaluate=config["evaluate"],
        device=config["device"],
    script:
        "../scripts/counterfactual.py"

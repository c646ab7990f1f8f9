# Contributor valuation: contributors, coalitions, the property of every coalition model, Shapley
# values per way, their evaluation (Shapley LDS, agreement with retraining, counterfactuals);
# rules/report.smk puts them in the experiment's report.


rule contributors:
    output:
        train=directory(sout("data/train.zarr")),
        reference=directory(sout("data/reference.zarr")),
        table=sout("data/contributors.csv"),
    log:
        log_path("contributors"),
    benchmark:
        bench_path("contributors")
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        data=SHAPLEY_DATA,
        contributors=SHAPLEY["contributors"],
    script:
        "../scripts/contributors.py"


rule coalitions:
    input:
        table=sout("data/contributors.csv"),
    output:
        sout("subsets/coalitions.npz"),
    log:
        log_path("coalitions"),
    benchmark:
        bench_path("coalitions")
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        estimator=SHAPLEY["estimator"],
        num_coalitions=SHAPLEY["num_coalitions"],
        enumerate_sizes=SHAPLEY["enumerate_sizes"],
        heldout={k: SHAPLEY["heldout"][k] for k in ("num_coalitions", "alpha")},
        datamodel=SHAPLEY["datamodel"],
        seed=SHAPLEY["seed"],
    script:
        "../scripts/coalitions.py"


rule train_classifier:
    input:
        train=sout("data/reference.zarr"),
    output:
        directory(sout("models/classifier")),
    log:
        log_path("train_classifier"),
    benchmark:
        bench_path("train_classifier")
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        classifier=SHAPLEY["classifier"],
        seed=SHAPLEY["seed"],
    script:
        "../scripts/train_classifier.py"


rule reference_features:
    input:
        unpack(lambda wc: feature_inputs()),
        train=sout("data/reference.zarr"),
    output:
        sout("properties/reference_features.npz"),
    log:
        log_path("reference_features"),
    benchmark:
        bench_path("reference_features")
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        gpu=GPU_RULE_GPUS,
        mem_mb=config["resources"]["gpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        prop=SHAPLEY["property"],
        device=config["device"],
    script:
        "../scripts/reference_features.py"


rule coalition_property:
    input:
        unpack(property_inputs),
    output:
        sout("properties/{how}/{coalition}/seed{seed}.json"),
    log:
        log_path("coalition_property", "{how}-{coalition}-seed{seed}"),
    benchmark:
        bench_path("coalition_property", "{how}-{coalition}-seed{seed}")
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        gpu=GPU_RULE_GPUS,
        mem_mb=config["resources"]["gpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        prop=SHAPLEY["property"],
        device=config["device"],
        models=lambda wc: [
            {"how": wc.how, "coalition": wc.coalition, "seed": int(wc.seed)}
        ],
    script:
        "../scripts/coalition_property.py"


# With shapley.models_per_job > 1, one job measures a batch of coalition models, each into its own file.
for b, batch in enumerate(coalition_batches(models=False)):

    rule:
        name:
            f"coalition_property_batch{b}"
        input:
            unpack(
                lambda wc, batch=batch: batch_inputs(batch, property_inputs, "model")
            ),
        output:
            [property_path(*m) for m in batch],
        log:
            log_path("coalition_property", f"batch{b}"),
        benchmark:
            bench_path("coalition_property", f"batch{b}")
        conda:
            "../envs/diffattr.yaml"
        threads: config["threads"]
        resources:
            gpu=GPU_RULE_GPUS,
            mem_mb=config["resources"]["gpu_mem_mb"],
            runtime=config["resources"]["runtime"] * len(batch),
        params:
            prop=SHAPLEY["property"],
            device=config["device"],
            models=[{"how": h, "coalition": c, "seed": s} for h, c, s in batch],
        script:
            "../scripts/coalition_property.py"


rule shapley_values:
    input:
        table=sout("data/contributors.csv"),
        coalitions=sout("subsets/coalitions.npz"),
        properties=lambda wc: fit_property_paths(wc.how),
        endpoints=lambda wc: endpoint_property_paths(wc.how),
    output:
        report(
            sout("values/{estimator}-{how}.csv"),
            caption="../workflow/report/values_table.rst",
            category="Tables",
            labels={"table": "values {estimator}-{how}"},
        ),
    log:
        log_path("shapley_values", "{estimator}-{how}"),
    benchmark:
        bench_path("shapley_values", "{estimator}-{how}")
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        coalitions=fit_coalitions(),
        endpoints=SHAPLEY["endpoints"],
        prop=SHAPLEY["property"]["name"],
        bootstrap=SHAPLEY["bootstrap"],
        seed=SHAPLEY["seed"],
    script:
        "../scripts/shapley_values.py"


rule shapley_metrics:
    input:
        coalitions=sout("subsets/coalitions.npz"),
        values=expand(
            sout("values/{estimator}-{how}.csv"), estimator=ESTIMATORS, how=HOWS
        ),
        heldout=retrained_property_paths(heldout_coalitions()),
        models=[
            sout(f"models/coalition/{how}/{c}/seed{SHAPLEY_SEED}")
            for how in HOWS
            for c in fit_coalitions()
        ],
        properties=[
            property_path(how, c, SHAPLEY_SEED)
            for how in HOWS
            for c in fit_coalitions()
        ],
        counterfactual=retrained_property_paths(counterfactual_coalitions() + ["full"]),
        full=FULL_MODEL,
        pruned=BASE_MODELS["sparse_ft"] if "sparse_ft" in HOWS else [],
    output:
        lds=report(
            sout("metrics/shapley_lds.csv"),
            caption="../workflow/report/shapley_lds_table.rst",
            category="Tables",
            labels={"table": "Shapley LDS"},
        ),
        agreement=report(
            sout("metrics/agreement.csv"),
            caption="../workflow/report/agreement_table.rst",
            category="Tables",
            labels={"table": "agreement"},
        ),
        cost=report(
            sout("metrics/cost.csv"),
            caption="../workflow/report/cost_table.rst",
            category="Tables",
            labels={"table": "cost"},
        ),
        counterfactual=report(
            sout("metrics/counterfactual.csv"),
            caption="../workflow/report/contributor_counterfactual_table.rst",
            category="Tables",
            labels={"table": "contributor counterfactual"},
        ),
        planted=sout("metrics/planted.csv"),
    log:
        log_path("shapley_metrics"),
    benchmark:
        bench_path("shapley_metrics")
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        estimator=SHAPLEY["estimator"],
        heldout=heldout_coalitions(),
        seeds=SHAPLEY["heldout"]["seeds"],
        counterfactual=counterfactual_coalitions(),
        prop=SHAPLEY["property"]["name"],
        bootstrap=SHAPLEY["bootstrap"],
        level=config["evaluate"]["ci"],
        seed=config["evaluate"]["seed"],
    script:
        "../scripts/shapley_metrics.py"

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

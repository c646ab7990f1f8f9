# Data: the train/val image stores and the random subsets of the LDS benchmark.


rule prepare_data:
    output:
        train=directory(out("data/train.zarr")),
        val=directory(out("data/val.zarr")),
    log:
        log_path("prepare_data"),
    benchmark:
        bench_path("prepare_data")
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        data=config["data"],
    script:
        "../scripts/prepare_data.py"


rule lds_subsets:
    input:
        train=out("data/train.zarr"),
    output:
        out("subsets/lds.npz"),
    log:
        log_path("lds_subsets"),
    benchmark:
        bench_path("lds_subsets")
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        lds=LDS_PARAMS,
        n_targets={split: split_size(split) for split in TARGET_SPLITS},
    script:
        "../scripts/lds_subsets.py"

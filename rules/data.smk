# Data: the train/val image stores and the random subsets of the LDS benchmark.


rule prepare_data:
    output:
        train=directory(out("data/train.zarr")),
        val=directory(out("data/val.zarr")),
    params:
        data=config["data"],
    log:
        log_path("prepare_data"),
    benchmark:
        bench_path("prepare_data")
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    script:
        "../scripts/prepare_data.py"


rule lds_subsets:
    input:
        train=out("data/train.zarr"),
    output:
        out("subsets/lds.npz"),
    params:
        lds=config["lds"],
        n_targets={split: split_size(split) for split in TARGET_SPLITS},
    log:
        log_path("lds_subsets"),
    benchmark:
        bench_path("lds_subsets")
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    script:
        "../scripts/lds_subsets.py"

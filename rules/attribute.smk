# Attribution: a score matrix (targets x train) per method and target split.


rule trak_scores:
    input:
        train=lambda wc: shard_paths(
            config["methods"][wc.method]["featurizer"], "train"
        ),
        targets=lambda wc: shard_paths(
            config["methods"][wc.method]["featurizer"], wc.target_split
        ),
        subsets=out("subsets/lds.npz"),
        outputs=lds_output_paths(),
    output:
        directory(out("scores/{method}/{target_split}.zarr")),
    log:
        log_path("trak_scores", "{method}-{target_split}"),
    benchmark:
        bench_path("trak_scores", "{method}-{target_split}")
    wildcard_constraints:
        method=name_regex(methods_of_kind("trak")),
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        attribute=config["attribute"],
        train_seeds=config["lds"]["train_seeds"],
    script:
        "../scripts/trak_scores.py"


rule pixel_scores:
    input:
        train=out("data/train.zarr"),
        targets=lambda wc: split_images(wc.target_split),
    output:
        directory(out("scores/{method}/{target_split}.zarr")),
    log:
        log_path("pixel_scores", "{method}-{target_split}"),
    benchmark:
        bench_path("pixel_scores", "{method}-{target_split}")
    wildcard_constraints:
        method=name_regex(methods_of_kind("pixel")),
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    script:
        "../scripts/pixel_scores.py"

# Attribution: a score matrix (targets x train) per method and target split.


# Journey-TRAK's target features: gradients at the x_t the generated images' DDIM runs visited,
# averaged over the method's steps and projected like its featurizer's train shards.
rule featurize_journey:
    input:
        model=out(f"models/full/seed{FULL_SEED}"),
        trajectory=out("samples/full_trajectory.zarr"),
    output:
        directory(out("grads/journey/{method}/gen/{shard}.zarr")),
    log:
        log_path("featurize_journey", "{method}-{shard}"),
    benchmark:
        bench_path("featurize_journey", "{method}-{shard}")
    wildcard_constraints:
        method=name_regex(methods_where(lambda kind: kind.trajectories)),
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        gpu=GPU_RULE_GPUS,
        mem_mb=config["resources"]["gpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        featurizer=lambda wc: config["featurizers"][
            config["methods"][wc.method]["featurizer"]
        ],
        steps=lambda wc: config["methods"][wc.method]["steps"],
        shard_size=config["featurize"]["shard_size"],
        batch_size=config["featurize"]["batch_size"],
        device=config["device"],
    script:
        "../scripts/journey_features.py"


# TRAK / D-TRAK, and Journey-TRAK (gen only: its targets are the trajectory features below).
rule trak_scores:
    input:
        unpack(trak_score_inputs),
    output:
        directory(out("scores/{method}/{target_split}.zarr")),
    log:
        log_path("trak_scores", "{method}-{target_split}"),
    benchmark:
        bench_path("trak_scores", "{method}-{target_split}")
    wildcard_constraints:
        method=name_regex(methods_scored_by("trak_scores")),
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        attribute=config["attribute"],
        train_seeds=config["lds"]["train_seeds"],
        members=lambda wc: len(ensemble_members(wc.method)),
        ensemble=lambda wc: config["methods"][wc.method].get("ensemble", {"members": 1}),
    script:
        "../scripts/trak_scores.py"


rule clip_scores:
    input:
        train=out("data/train.zarr"),
        targets=lambda wc: split_images(wc.target_split),
    output:
        directory(out("scores/{method}/{target_split}.zarr")),
    log:
        log_path("clip_scores", "{method}-{target_split}"),
    benchmark:
        bench_path("clip_scores", "{method}-{target_split}")
    wildcard_constraints:
        method=name_regex(methods_scored_by("clip_scores")),
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        gpu=GPU_RULE_GPUS,
        mem_mb=config["resources"]["gpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        clip=config["clip"],
        device=config["device"],
    script:
        "../scripts/clip_scores.py"


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
        method=name_regex(methods_scored_by("pixel_scores")),
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    script:
        "../scripts/pixel_scores.py"


# DAS, relative / renormalised IF (damping chosen on held-out targets), gradient dot / cosine.
rule local_scores:
    input:
        unpack(local_score_inputs),
    output:
        directory(out("scores/{method}/{target_split}.zarr")),
    log:
        log_path("local_scores", "{method}-{target_split}"),
    benchmark:
        bench_path("local_scores", "{method}-{target_split}")
    wildcard_constraints:
        method=name_regex(methods_scored_by("local_scores")),
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        method=lambda wc: config["methods"][wc.method],
        attribute=config["attribute"],
    script:
        "../scripts/local_scores.py"


# Diffusion-TracIn and ReTrac: sums over the full model's training checkpoints.
rule tracin_scores:
    input:
        unpack(tracin_inputs),
    output:
        directory(out("scores/{method}/{target_split}.zarr")),
    log:
        log_path("tracin_scores", "{method}-{target_split}"),
    benchmark:
        bench_path("tracin_scores", "{method}-{target_split}")
    wildcard_constraints:
        method=name_regex(methods_scored_by("tracin_scores")),
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        method=lambda wc: config["methods"][wc.method],
        checkpoints=config["train"]["checkpoints"],
    script:
        "../scripts/tracin_scores.py"


# EK-FAC influence (Mlodozeniec et al.): the Kronecker factors of the full model's GGN, fitted once
# per featurizer and factor draws over the training images x their (t, noise) draws.
rule ekfac_factors:
    input:
        model=out(f"models/full/seed{FULL_SEED}"),
        images=out("data/train.zarr"),
    output:
        out("ekfac/{featurizer}/factors-{draws}.npz"),
    log:
        log_path("ekfac_factors", "{featurizer}-{draws}"),
    benchmark:
        bench_path("ekfac_factors", "{featurizer}-{draws}")
    wildcard_constraints:
        featurizer=name_regex(sorted({f for f, _ in ekfac_fits()})),
        draws=name_regex(sorted({d for _, d in ekfac_fits()})),
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        gpu=GPU_RULE_GPUS,
        mem_mb=config["resources"]["gpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        featurizer=lambda wc: config["featurizers"][wc.featurizer],
        draws=lambda wc: wc.draws,
        device=config["device"],
    script:
        "../scripts/ekfac_factors.py"


# EK-FAC scores: full gradients of the train and target images, each over its own (t, noise) draws,
# preconditioned by the factors, damping chosen on held-out targets.
rule ekfac_scores:
    input:
        unpack(ekfac_inputs),
    output:
        directory(out("scores/{method}/{target_split}.zarr")),
    log:
        log_path("ekfac_scores", "{method}-{target_split}"),
    benchmark:
        bench_path("ekfac_scores", "{method}-{target_split}")
    wildcard_constraints:
        method=name_regex(methods_scored_by("ekfac_scores")),
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        gpu=GPU_RULE_GPUS,
        mem_mb=config["resources"]["gpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        featurizer=lambda wc: config["featurizers"][
            config["methods"][wc.method]["featurizer"]
        ],
        method=lambda wc: config["methods"][wc.method],
        attribute=config["attribute"],
        device=config["device"],
    script:
        "../scripts/ekfac_scores.py"

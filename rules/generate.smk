# Generation: the generated-target set, sampled with DDIM from the full model, one seed per image
# (and its trajectories, samples/full_trajectory.zarr, when some method is Journey-TRAK).


rule generate:
    input:
        model=out(f"models/full/seed{FULL_SEED}"),
    output:
        generate_outputs(),
    log:
        log_path("generate"),
    benchmark:
        bench_path("generate")
    conda:
        "../envs/diffattr.yaml"
    threads: config["threads"]
    resources:
        gpu=GPU_RULE_GPUS,
        mem_mb=config["resources"]["gpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        generate=config["generate"],
        device=config["device"],
    script:
        "../scripts/generate.py"

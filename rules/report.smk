# Report: what a person reads first.


rule report:
    input:
        lds=out("metrics/lds.csv"),
        gen_scores=[out(f"scores/{method}/gen.zarr") for method in config["methods"]],
        samples=out("samples/full.zarr"),
        train=out("data/train.zarr"),
        subsets=out("subsets/lds.npz"),
    output:
        html=out("report/index.html"),
        figure=out("report/figures/lds.png"),
        examples=out("report/figures/top_attributions.png"),
    log:
        log_path("report"),
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        methods=list(config["methods"]),
        examples=4,
        benchmarks=out("benchmarks"),
        config=config,
    script:
        "../scripts/report.py"

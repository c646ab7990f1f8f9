# Report: what a person reads first.


rule report:
    input:
        lds=out("metrics/lds.csv"),
    output:
        html=out("report/index.html"),
        figure=out("report/figures/lds.png"),
    log:
        log_path("report"),
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        experiment=config["experiment"],
        benchmarks=out("benchmarks"),
        config=config,
    script:
        "../scripts/report.py"

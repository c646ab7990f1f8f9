# Report: what a person reads first.


rule report:
    input:
        lds=out("metrics/lds.csv"),
    output:
        html=out("report/index.html"),
        figure=out("report/figures/lds.png"),
    params:
        experiment=config["experiment"],
        benchmarks=out("benchmarks"),
        config=config,
    log:
        log_path("report"),
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    script:
        "../scripts/report.py"

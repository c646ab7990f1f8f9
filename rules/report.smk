# Report: one page per experiment with the results of every enabled branch (src/diffattr/report/).


rule report:
    input:
        unpack(lambda wc: report_inputs()),
    output:
        html=out("report/index.html"),
        figures=report_figures(),
    log:
        log_path("report"),
    benchmark:
        bench_path("report")
    conda:
        "../envs/diffattr.yaml"
    resources:
        mem_mb=config["resources"]["cpu_mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        methods=list(config["methods"]),
        examples=4,
        level=config["evaluate"]["ci"],
        estimator=SHAPLEY["estimator"],
        prop=SHAPLEY["property"]["name"],
        benchmarks=out("benchmarks"),
        branches=lambda wc: rule_branches(),
        source=workflow.basedir,
        config=config,
    script:
        "../scripts/report.py"

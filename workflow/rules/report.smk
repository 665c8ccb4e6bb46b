rule report:
    """results/report.md and report.html, cells.csv, figures, and metrics.json for `dvc exp show`."""
    input:
        inputs(job("report")),
    output:
        job("report").outs[:-1],
        figures=directory(job("report").outs[-1]),
        metrics=job("report").metrics[0],
    params:
        command=job("report").cmd,
        settings=settings(job("report")),
    log:
        "logs/report/report.log",
    threads: 1
    conda:
        "../envs/align-mamba.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    shell:
        "{params.command}"

rule report:
    """results/report.md and report.html, cells.csv, figures, and metrics.json for `dvc exp show`."""
    input:
        cells=[cell.metrics for cell in CELLS.values()],
        bench=rules.bench.output,
        scan_throughput=rules.scan_throughput.output,
        taggers=expand(f"{SECRETS_RESULTS}/{{tagger}}", tagger=TAGGERS),
        baselines=rules.secrets_baselines.output,
        code=REPORT_CODE,
    output:
        markdown="results/report.md",
        html="results/report.html",
        table="results/cells.csv",
        figures=directory("results/figures"),
        metrics="results/metrics.json",
    params:
        command=report_command(config),
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

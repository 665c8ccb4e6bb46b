rule evaluate:
    """Test-set metrics of one cell, with its backend, device and state size."""
    input:
        lambda wildcards: inputs(cell_job("evaluate")(wildcards)),
    output:
        metrics="results/cells/{arch}/{stem}.json",
    params:
        command=lambda wildcards: cell_job("evaluate")(wildcards).cmd,
        settings=lambda wildcards: settings(cell_job("evaluate")(wildcards)),
    log:
        "logs/evaluate/{arch}/{stem}.log",
    threads: 1
    conda:
        "../envs/align-mamba.yaml"
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=USES_GPU,
        gpu_slots=USES_GPU,
    shell:
        "{params.command}"

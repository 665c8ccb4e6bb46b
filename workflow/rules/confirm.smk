rule confirm:
    """A failed cell next to a success, trained again at twice the steps (else a note why not)."""
    input:
        lambda wildcards: inputs(cell_job("confirm")(wildcards)),
    output:
        metrics="results/cells/{arch}/{stem}.confirm.json",
    params:
        command=lambda wildcards: cell_job("confirm")(wildcards).cmd,
        settings=lambda wildcards: settings(cell_job("confirm")(wildcards)),
    log:
        "logs/confirm/{arch}/{stem}.log",
    threads: 1
    conda:
        "../envs/align-mamba.yaml"
    resources:
        mem_mb=16000,
        runtime=480,
        gpu=USES_GPU,
        gpu_slots=USES_GPU,
    shell:
        "{params.command}"

rule train:
    """Train one cell; validation accuracy picks the checkpoint; resumes after a kill."""
    input:
        lambda wildcards: inputs(cell_job("train")(wildcards)),
    output:
        model="runs/{arch}/{stem}/model.pt",
        history="runs/{arch}/{stem}/history.csv",
        summary="runs/{arch}/{stem}/train.json",
    params:
        command=lambda wildcards: cell_job("train")(wildcards).cmd,
        settings=lambda wildcards: settings(cell_job("train")(wildcards)),
    log:
        "logs/train/{arch}/{stem}.log",
    threads: 1
    conda:
        "../envs/align-mamba.yaml"
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=USES_GPU,
        gpu_slots=USES_GPU,
    shell:
        "{params.command}"

rule train:
    """Train one cell; validation accuracy picks the checkpoint; resumes after a kill."""
    input:
        data=lambda wildcards: data_dir(cell_of(wildcards).num_pairs),
        code=TRAIN_CODE,
    output:
        model="runs/{arch}/{stem}/model.pt",
        history="runs/{arch}/{stem}/history.csv",
        summary="runs/{arch}/{stem}/train.json",
    params:
        command=lambda wildcards: train_command(config, cell_of(wildcards)),
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

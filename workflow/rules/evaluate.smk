rule evaluate:
    """Test-set metrics of one cell, with its backend, device and state size."""
    input:
        model="runs/{arch}/{stem}/model.pt",
        data=lambda wildcards: data_dir(cell_of(wildcards).num_pairs),
        code=EVALUATE_CODE,
    output:
        metrics="results/cells/{arch}/{stem}.json",
    params:
        command=lambda wildcards: evaluate_command(config, cell_of(wildcards)),
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

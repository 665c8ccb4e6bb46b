rule mqar_data:
    """One MQAR dataset (train/validation/test, both layouts) per num_pairs."""
    input:
        code=DATA_CODE,
    output:
        data=directory("data/mqar/np{num_pairs}"),
    params:
        command=lambda wildcards: data_command(config, int(wildcards.num_pairs)),
    log:
        "logs/mqar_data/np{num_pairs}.log",
    threads: 1
    conda:
        "../envs/align-mamba.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{params.command}"

rule validate:
    """params.yaml checked as one typed tree (and dvc.yaml against it): every job waits for this."""
    input:
        inputs(job("validate")),
    output:
        ok=job("validate").outs[0],
    params:
        command=job("validate").cmd,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    shell:
        "{params.command}"


rule mqar_data:
    """One MQAR dataset (train/validation/test, both layouts) per num_pairs."""
    input:
        lambda wildcards: inputs(job("mqar_data", f"np{wildcards.num_pairs}")),
    output:
        data=directory("data/mqar/np{num_pairs}"),
    params:
        command=lambda wildcards: job("mqar_data", f"np{wildcards.num_pairs}").cmd,
        settings=lambda wildcards: settings(job("mqar_data", f"np{wildcards.num_pairs}")),
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

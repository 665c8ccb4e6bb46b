rule secrets_data:
    """Long carrier files with planted synthetic secrets and decoys: train/validation/test splits."""
    input:
        inputs(job("secrets_data")),
    output:
        data=directory(job("secrets_data").outs[0]),
    params:
        command=job("secrets_data").cmd,
        settings=settings(job("secrets_data")),
    log:
        "logs/secrets/data.log",
    threads: 1
    conda:
        "../envs/align-mamba.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{params.command}"


rule secrets_train:
    """One byte tagger; validation span F1 picks the checkpoint; resumes after a kill."""
    input:
        lambda wildcards: inputs(job("secrets_train", wildcards.tagger)),
    output:
        model="runs/secrets/{tagger}/model.pt",
        history="runs/secrets/{tagger}/history.csv",
        summary="runs/secrets/{tagger}/train.json",
    params:
        command=lambda wildcards: job("secrets_train", wildcards.tagger).cmd,
        settings=lambda wildcards: settings(job("secrets_train", wildcards.tagger)),
    log:
        "logs/secrets/train/{tagger}.log",
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


rule secrets_evaluate:
    """A tagger's spans on the test splits through the chunked path, scored like every system."""
    input:
        lambda wildcards: inputs(job("secrets_evaluate", wildcards.tagger)),
    output:
        scores=directory("results/secrets/{tagger}"),
    params:
        command=lambda wildcards: job("secrets_evaluate", wildcards.tagger).cmd,
        settings=lambda wildcards: settings(job("secrets_evaluate", wildcards.tagger)),
    log:
        "logs/secrets/evaluate/{tagger}.log",
    threads: 1
    conda:
        "../envs/align-mamba.yaml"
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=USES_GPU,
        gpu_slots=USES_GPU,
    shell:
        "{params.command}"


rule secrets_baselines:
    """detect-secrets and CredSweeper on the same files, findings located as byte spans and scored."""
    input:
        inputs(job("secrets_baselines")),
    output:
        scores=directory(job("secrets_baselines").outs[0]),
    params:
        command=job("secrets_baselines").cmd,
        settings=settings(job("secrets_baselines")),
    log:
        "logs/secrets/baselines.log",
    threads: 2
    conda:
        "../envs/align-mamba.yaml"
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "{params.command}"

rule secrets_data:
    """Long carrier files with planted synthetic secrets and decoys: train/validation/test splits."""
    input:
        code=SECRETS_DATA_CODE,
    output:
        data=directory(SECRETS_DATA),
    params:
        command=secrets_data_command(config),
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
        data=SECRETS_DATA,
        code=SECRETS_MODEL_CODE,
    output:
        model="runs/secrets/{tagger}/model.pt",
        history="runs/secrets/{tagger}/history.csv",
        summary="runs/secrets/{tagger}/train.json",
    params:
        command=lambda wildcards: secrets_train_command(config, TAGGERS[wildcards.tagger]),
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
        model="runs/secrets/{tagger}/model.pt",
        data=SECRETS_DATA,
        code=SECRETS_MODEL_CODE,
    output:
        scores=directory(f"{SECRETS_RESULTS}/{{tagger}}"),
    params:
        command=lambda wildcards: secrets_evaluate_command(config, TAGGERS[wildcards.tagger]),
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
        data=SECRETS_DATA,
        code=["src/align_mamba/secrets/baselines.py", "src/align_mamba/secrets/score.py"],
    output:
        scores=directory(f"{SECRETS_RESULTS}/baselines"),
    params:
        command=secrets_baselines_command(config),
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

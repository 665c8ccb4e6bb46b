rule bench:
    """Tokens/s and peak memory against sequence length: mixers, architectures, the training ladder."""
    input:
        code=BENCH_CODE,
    output:
        mixers=f"{BENCH_DIR}/mixers.csv",
        ladder=f"{BENCH_DIR}/train_step.csv",
        summary=f"{BENCH_DIR}/summary.json",
    params:
        command=bench_command(config),
    log:
        "logs/bench/bench.log",
    threads: 1
    conda:
        "../envs/align-mamba.yaml"
    resources:
        mem_mb=16000,
        runtime=60,
        gpu=BENCH_GPU,
        gpu_slots=BENCH_GPU_SLOTS,
    shell:
        "{params.command}"


rule scan_throughput:
    """MB/s of `align-mamba scan` on generated 1 MB / 8 MB files, next to the baseline scanners."""
    input:
        model=f"{tagger_dir(config['secrets']['scan_tagger'])}/model.pt",
        code=SECRETS_MODEL_CODE,
    output:
        table=f"{BENCH_DIR}/scan_throughput.csv",
    params:
        command=scan_throughput_command(config),
    log:
        "logs/bench/scan_throughput.log",
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

rule bench:
    """Tokens/s and peak memory against sequence length: mixers, architectures, the training ladder."""
    input:
        inputs(job("bench")),
    output:
        job("bench").outs,
    params:
        command=job("bench").cmd,
        settings=settings(job("bench")),
    log:
        "logs/bench/bench.log",
    # Timings: the job takes every core, so no other job runs beside it and skews them.
    threads: workflow.cores
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
        inputs(job("scan_throughput")),
    output:
        job("scan_throughput").outs,
    params:
        command=job("scan_throughput").cmd,
        settings=settings(job("scan_throughput")),
    log:
        "logs/bench/scan_throughput.log",
    # Timings: the job takes every core, so no other job runs beside it and skews them.
    threads: workflow.cores
    conda:
        "../envs/align-mamba.yaml"
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=USES_GPU,
        gpu_slots=USES_GPU,
    shell:
        "{params.command}"

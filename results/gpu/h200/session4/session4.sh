# Session 4 (background, setsid). GPU 1: grid run 4 (hybrid-0_2, 256 pairs, 2000 steps).
# GPU 0: the GPU tests before causal-conv1d, then (once built) the bf16 scan at 1 and 8 MiB and the GPU tests again.
source .gpu/common.sh > /tmp/res/setup.log 2>&1
T0=$(date +%s)
mark() { echo "$(( $(date +%s) - T0 )) $*" >> /tmp/res/timeline.txt; }
left() { echo $(( $1 - ($(date +%s) - T0) )); }
mark setup-done
NGPU=$(nvidia-smi -L | wc -l)
{ nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv; nproc
  python3 -c "import triton, torch, mamba_ssm; print('torch', torch.__version__, 'triton', triton.__version__, 'mamba_ssm', mamba_ssm.__version__)"; } > /tmp/res/device.txt 2>&1
setsid bash -c 'export MAX_JOBS=$(( $(nproc) / 2 )); source .gpu/setup_device.sh --conv > /tmp/res/build_conv.log 2>&1; cp /tmp/cuda-wheels/causal_conv1d-*.whl /tmp/res/ ; touch /tmp/res/CONV_DONE' < /dev/null &
rm -rf /tmp/gridD && mkdir -p /tmp/gridD && cp -r Snakefile workflow src /tmp/gridD/ && cp .gpu/gridD.yaml /tmp/gridD/params.yaml
grid() {  # $1: visible GPU, $2: deadline (seconds since T0)
  mark grid-start gpu=$1 left=$(left $2)
  (cd /tmp/gridD && CUDA_VISIBLE_DEVICES=$1 timeout $(left $2) snakemake --profile workflow/profiles/gpu-node \
     --scheduler greedy --until evaluate --cores 16 --resources gpu_slots=16 > snakemake.log 2>&1; echo "rc=$?" >> snakemake.log)
  mark grid-end
}
[ "$NGPU" -ge 2 ] && { grid 1 900 & }
export CUDA_VISIBLE_DEVICES=0
timeout 560 python3 -m pytest -q -rA -m gpu --durations=0 tests > /tmp/res/gpu_tests_noconv.txt 2>&1
mark gpu-tests-noconv rc=$?
for i in $(seq 1 150); do [ -f /tmp/res/CONV_DONE ] && break; sleep 5; done
mark conv-wait-end $(ls /tmp/site/causal_conv1d 2>/dev/null | head -1)
S="python3 -m align_mamba.secrets.throughput --checkpoint results/gpu/secrets/bimamba/model.pt --device cuda --backend kernels --batch-chunks 32 --sizes-mb 1 8 --kinds log python yaml --repeats 5 --warmup 2 --weights bfloat16"
timeout 240 $S --tools --out /tmp/res/scan_bf16.csv --log /tmp/res/scan_bf16.log > /tmp/res/scan_bf16.out 2>&1
mark scan-bf16 rc=$?
timeout 150 $S --ssd-chunk-size 128 --out /tmp/res/scan_bf16_ssd128.csv --log /tmp/res/scan_bf16_ssd128.log > /tmp/res/scan_bf16_ssd128.out 2>&1
mark scan-bf16-ssd128 rc=$?
timeout 560 python3 -m pytest -q -rA -m gpu --durations=0 tests > /tmp/res/gpu_tests_conv.txt 2>&1
mark gpu-tests-conv rc=$?
wait
mark all-done
touch /tmp/res/DONE

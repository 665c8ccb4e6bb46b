# Two pytest processes on one GPU at once: the bench test without causal-conv1d (to see its failure),
# and the three GPU tests the last call did not reach, with causal-conv1d from the carried wheel.
export PYTHONUNBUFFERED=1
source .gpu/setup_device.sh > $OUT/setup.log 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site_conv .gpu/conv_wheel/*.whl >> $OUT/setup.log 2>&1
(timeout 380 python3 -m pytest -q -rA -x --durations=0 tests/test_bench_gpu.py > $OUT/bench_noconv.txt 2>&1; echo "rc=$?" >> $OUT/bench_noconv.txt) &
(PYTHONPATH=/tmp/site_conv:$PYTHONPATH timeout 380 python3 -m pytest -q -rA --durations=0 \
   tests/test_models_gpu.py::test_a_gpu_cell_trains_with_kernels_and_evaluates_on_the_cpu_reference tests/test_secrets_gpu.py \
   > $OUT/rest_conv.txt 2>&1; echo "rc=$?" >> $OUT/rest_conv.txt) &
wait
tail -60 $OUT/bench_noconv.txt; tail -25 $OUT/rest_conv.txt

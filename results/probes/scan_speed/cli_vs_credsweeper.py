"""Whole-command wall time: `align-mamba scan FILE` (interpreter start, model load, gate, scan) against
CredSweeper's CLI (through the project's adapter, as the throughput tool runs it) on the same files,
alternating, median of 3 each. Usage: cli_vs.py WORK_DIR (the throughput tool's --work-dir)."""
import os, statistics, subprocess, sys, time
from pathlib import Path
from align_mamba.secrets.baselines import TOOLS
env = dict(os.environ)  # the installed align_mamba: run from the project with `pip install -e .`
print("file,bytes,align_mamba_scan_s,credsweeper_s,ratio")
for directory in sorted(Path(sys.argv[1]).iterdir()):
    path = next((directory / "files").iterdir())
    if path.stat().st_size < 2**20:
        continue
    ours, theirs = [], []
    for _ in range(3):
        start = time.perf_counter()
        code = subprocess.run([sys.executable, "-m", "align_mamba.cli", "scan", str(path)], env=env, capture_output=True).returncode
        ours.append(time.perf_counter() - start)
        assert code in (0, 1), code
        start = time.perf_counter(); TOOLS["credsweeper"].run(directory); theirs.append(time.perf_counter() - start)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"{directory.name},{path.stat().st_size},{a:.3f},{b:.3f},{b / a:.2f}", flush=True)

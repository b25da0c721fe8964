#!/usr/bin/env bash
# Issue 4's GPU check in one call on a lent device: bench/pairing.py with the cost matrices on the GPU and the
# exact solvers (scipy for the paper's recipe, lapjv for ours) on its host CPU.
#
# The device image (Python 3.12, torch, scipy, scikit-learn) has no lapjv and cannot download; bring a wheel.
# Build it once here (pyenv ships Python 3.12; the local index has lapjv only as source):
#   /root/.pyenv/versions/3.12.1/bin/python -m pip wheel lapjv==1.3.29 --no-deps -w .whl
# then call the device tool with carry [".whl"] and the command "bash bench/pairing_gpu.sh" (about 2 minutes).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/lapjv-*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
python3 -c "import aot.training.assignment as p; assert 'lapjv' in p.SOLVERS, 'lapjv did not import'"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 bench/pairing.py --sizes 512,2048 --device cuda --instances 5 2>&1 | tee "${OUT:-.}/pairing-gpu.md"

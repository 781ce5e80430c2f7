#!/usr/bin/env bash
# GPT-SoVITS on a CUDA machine (issue 16, item 6): the CUDA tests, then `bench ar-device` in bfloat16
# with the eager, compiled and CUDA-graph steps, the compiled and replayed steps' tokens checked
# against the eager step's.
#
#   bash scripts/gpu_check.sh [OUTDIR]        # from a checkout, on the GPU machine
#
# Needs only a python3 whose torch sees a CUDA device, and numpy (the lent H200's image has both).
# Nothing is downloaded: streamvox itself is put on the path from this checkout (its package
# folders linked under a temporary site directory, no build), and the parts run here import
# nothing else.  Logs and JSON go to OUTDIR (default: $OUT if set, else ./gpu-check).
# Each part has its own time limit, so one that overruns still leaves the others' results.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu-check}}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1

site="$(mktemp -d)"
mkdir -p "$site/streamvox"
for folder in engine codecs stream_server web_demo bench deploy; do
    ln -s "$PWD/$folder" "$site/streamvox/$folder"
done
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"

"$py" - <<'EOF' 2>&1 | tee "$out/machine.txt"
import platform, sys
import torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device here")
props = torch.cuda.get_device_properties(0)
print("device", props.name, f"{props.total_memory / 2**30:.0f} GiB,", props.multi_processor_count, "SMs")
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 3
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >>"$out/machine.txt" 2>&1

status=0
# The CUDA tests, without the shared fixtures (they load the server, which needs libopus and libsndfile).
timeout 300 "$py" -m pytest --noconftest -p no:cacheprovider -q tests/unit/test_device_cuda.py 2>&1 \
    | tee "$out/tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

# Eager and graph-replayed steps at every batch size; the compiled modes (each batch size compiles
# once, tens of seconds) at two.
timeout 420 "$py" -m streamvox.bench.ar_device_cli --device cuda --dtype bfloat16 \
    --modes variable eager cuda-graph --batches 1 16 64 128 \
    --json-out "$out/ar_device_graph.json" 2>&1 | tee "$out/ar_device_graph.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
timeout 600 "$py" -m streamvox.bench.ar_device_cli --device cuda --dtype bfloat16 \
    --modes compile compile+cuda-graph --batches 1 64 \
    --json-out "$out/ar_device_compiled.json" 2>&1 | tee "$out/ar_device_compiled.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "gpu_check: results in $out (status $status)"
exit "$status"

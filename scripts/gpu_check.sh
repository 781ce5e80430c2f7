#!/usr/bin/env bash
# The GPU run of issue 16, item 6: the CUDA tests, `bench ar-device` (GPT-SoVITS's T2S in bfloat16
# with the eager, compiled and CUDA-graph steps, each one's tokens checked against the eager
# step's) and `bench dia` in bfloat16 on the GPU (its variable step beside its CUDA-graph one).
#
#   bash scripts/gpu_check.sh [PARTS] [OUTDIR]    # from a checkout, on the GPU machine
#
# PARTS: a comma-separated list of tests, ar, ar-compiled, dia, or all (the default).  Each part
# has its own time limit, so one that overruns still leaves the others' results; a lease's one
# command may run 10 minutes, so run `tests,ar` in one call and `ar-compiled,dia` in another.
# Needs only a python3 whose torch sees a CUDA device, with numpy and safetensors (the lent H200's
# image has them).  Nothing is downloaded: streamvox is put on the path from this checkout (its
# package folders linked under a temporary site directory, no build), and the parts import
# nothing else.  Logs and JSON go to OUTDIR (default: $OUT if set, else ./gpu-check).
set -uo pipefail
cd "$(dirname "$0")/.."
parts=",${1:-all},"
[ "$parts" = ",all," ] && parts=",tests,ar,ar-compiled,dia,"
out="${2:-${OUT:-gpu-check}}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1

site="$(mktemp -d)"
mkdir -p "$site/streamvox"
for folder in engine codecs stream_server web_demo bench deploy; do
    ln -s "$PWD/$folder" "$site/streamvox/$folder"
done
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"

"$py" - <<'PY' 2>&1 | tee "$out/machine.txt"
import platform, sys
import torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device here")
props = torch.cuda.get_device_properties(0)
print("device", props.name, f"{props.total_memory / 2**30:.0f} GiB,", props.multi_processor_count, "SMs")
PY
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 3
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >>"$out/machine.txt" 2>&1

status=0
run() {  # run NAME SECONDS COMMAND...: its output to $out/NAME.txt, its failure remembered
    local name=$1 seconds=$2
    shift 2
    echo "== $name"
    timeout "$seconds" "$@" 2>&1 | tee "$out/$name.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "gpu_check: $name failed"; status=1; }
}
bench=("$py" -m streamvox.bench.standalone)

# The shared fixtures load the server (libopus, libsndfile), hence --noconftest; no plugins
# either, so the machine's own pytest plugins change nothing.
[[ $parts == *,tests,* ]] && PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 run tests 300 \
    "$py" -m pytest --noconftest -p no:cacheprovider -q tests/unit/test_device_cuda.py
[[ $parts == *,ar,* ]] && run ar_device 420 "${bench[@]}" ar-device --device cuda --dtype bfloat16 \
    --modes variable eager cuda-graph --batches 1 16 64 128 --json-out "$out/ar_device.json"
# The compiled modes compile once per batch size (tens of seconds each): two sizes.
[[ $parts == *,ar-compiled,* ]] && run ar_device_compiled 540 "${bench[@]}" ar-device --device cuda \
    --dtype bfloat16 --modes compile compile+cuda-graph --batches 1 64 --json-out "$out/ar_device_compiled.json"
# Dia-1.6B's sizes, random weights written first (a few GB), bf16, the variable step beside the
# replayed fixed one (each of its batch sizes loads the voice again); the reference is a CPU run: left out.
[[ $parts == *,dia,* ]] && run dia 540 "${bench[@]}" dia --device cuda --dtypes bfloat16 --batches 1 8 \
    --modes variable cuda-graph --steps 32 --reference '' --json-out "$out/dia.json"

echo "gpu_check: results in $out (status $status)"
exit "$status"

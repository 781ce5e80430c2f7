#!/usr/bin/env bash
# Installs everything streamvox needs on a Debian machine, idempotently:
# system libraries (libopus0, espeak-ng), a virtual environment in .venv with
# torch==2.13.0 (CPU) and the package itself (editable, strict mode).
#   scripts/setup.sh          runtime only
#   scripts/setup.sh test     runtime + test and benchmark dependencies, Debian's chromium,
#                             Node.js and playwright-core (browser tests; no browser download)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

# gcc, the C library headers and the Python headers build the CPU attention kernels (optional at
# install, needed for their speed: engine/ar/cpu_attention.c)
system_packages=(libopus0 espeak-ng libsndfile1 python3-venv ca-certificates gcc libc6-dev python3-dev)
if [ "$extras" = "test" ]; then
  system_packages+=(chromium fonts-dejavu-core)
  command -v node >/dev/null 2>&1 || system_packages+=(nodejs npm)
fi
if command -v apt-get >/dev/null 2>&1; then
  missing=()
  for package in "${system_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    echo "setup: installing ${missing[*]}"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  echo "setup: installing torch==2.13.0 (CPU build)"
  "${pip[@]}" "torch==2.13.0"
fi
target="."
[ "$extras" = "test" ] && target=".[test,ray]"
echo "setup: installing streamvox ${target}"
"${pip[@]}" -e "$target" --config-settings editable_mode=strict
if [ "$extras" = "test" ]; then
  echo "setup: installing playwright-core for the browser tests"
  npm ci --prefix tests/browser --no-audit --no-fund --silent
  # The GPT-SoVITS parity tests run the original torch modules in a separate process; the
  # package's top-level modules (api, config, tools, AR, ...) stay out of .venv.
  if [ ! -f .ref/gpt-sovits/GPT_SoVITS/AR/models/t2s_model.py ] || [ ! -f .ref/gpt-sovits/inflect/__init__.py ]; then
    echo "setup: installing the GPT-SoVITS reference (gpt-sovits-cpufast) into .ref/gpt-sovits"
    "${pip[@]}" --no-deps --target .ref/gpt-sovits \
      "gpt-sovits-cpufast==0.1.0" "torchmetrics==1.9.0" "lightning-utilities==0.15.3" "einops==0.8.2" \
      "g2p_en==2.1.0" "wordsegment==1.3.1" "inflect==7.5.0" "more-itertools==10.8.0"
  fi
  # The Dia parity tests run transformers' own Dia and DAC in a separate process; transformers stays
  # out of .venv (the package never imports it) and takes its dependencies from it.
  if [ ! -d .ref/transformers/transformers/models/dia ]; then
    echo "setup: installing the Dia reference (transformers 5.23.0) into .ref/transformers"
    "${pip[@]}" --no-deps --target .ref/transformers "transformers==5.23.0"
  fi
  PYTHONPATH=.ref/transformers .venv/bin/python -c "import transformers.models.dia.modeling_dia" \
    || { echo "setup: the Dia reference does not import" >&2; exit 1; }
  # Pipecat pins soundfile and soxr below ours: it gets its own environment, driven by the
  # dialect tests in a child process (tests/reference/pipecat_tts.py).
  if ! .ref/pipecat/bin/python -c "import pipecat, sys; sys.exit(pipecat.__version__ != '1.14.0')" 2>/dev/null; then
    echo "setup: installing pipecat-ai 1.14.0 into .ref/pipecat"
    "$python" -m venv .ref/pipecat
    .ref/pipecat/bin/python -m pip install --quiet --disable-pip-version-check \
      "pipecat-ai[elevenlabs,cartesia,openai]==1.14.0"
  fi
  # LiveKit Agents and its plugins: their own environment too (grpc, opentelemetry, native rtc).
  if ! .ref/livekit/bin/python -c "import livekit.agents as a, sys; sys.exit(a.__version__ != '1.8.9')" 2>/dev/null; then
    echo "setup: installing livekit-agents 1.8.9 and its TTS plugins into .ref/livekit"
    "$python" -m venv .ref/livekit
    .ref/livekit/bin/python -m pip install --quiet --disable-pip-version-check "livekit-agents==1.8.9" \
      "livekit-plugins-elevenlabs==1.8.9" "livekit-plugins-openai==1.8.9" "livekit-plugins-cartesia==1.8.9"
  fi
fi

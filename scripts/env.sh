# Source this to run cargo directly against the project's virtualenv (what the Makefile does):
#   source scripts/env.sh && cargo test --release --test it attention::
_pzt_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VIRTUAL_ENV="$_pzt_root/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
unset _pzt_root

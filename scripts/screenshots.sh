#!/usr/bin/env bash
# Regenerates the README's pictures of the HTML pages (docs/screenshots/*.png) with the
# browser tests, which write their screenshots to PZT_SCREENSHOTS. Needs what `make test` sets
# up (the virtualenv and chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
mkdir -p docs/screenshots
PZT_SCREENSHOTS="$PWD/docs/screenshots" cargo test --release --test browser -- --test-threads=1
ls -l docs/screenshots

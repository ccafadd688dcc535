#!/usr/bin/env bash
# Every 40-step study of docs/results_archive.md, one after the other (finished arm x seed runs are skipped, so
# rerunning resumes).
#   nohup experiments/run_all.sh > runs/studies.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
for study in sixseven l2_norm uuid belief qr_code language; do
  python -m experiments.run "$study" --seeds 0 1 2 --steps 40 --eval-n 64
done

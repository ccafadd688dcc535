#!/usr/bin/env bash
# The paper-regime batch of issue 12 as planned in docs/results.md ("Protocol for the paper-regime studies"; the PLAN
# that experiments/step_timing.py prices at ~37 core-hours here): every study at the main point, and the batch-size
# sweep's other points for sixseven and l2_norm. Finished arm x seed runs are skipped, so rerunning resumes.
# Choose the GRPO learning rate or KL term against the control's collapse first (issue 12, item 3): pass it to every
# line with --set, e.g. --set grpo.beta=0.04.
#   nohup experiments/run_paper.sh > runs/paper.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN="dpg_adamw dpg_sgd naive first_order control leave_group_out"
for study in sixseven l2_norm uuid belief qr_code language; do
  heuristics=""
  if [ "$study" = language ]; then heuristics="levenshtein embedding langid"; fi
  python experiments/run.py "$study" --point bs256_m4 --arms $MAIN $heuristics
done
for study in sixseven l2_norm; do
  python experiments/run.py "$study" --point bs64_m1 --arms dpg_adamw dpg_sgd naive
  python experiments/run.py "$study" --point bs1024_m16 --arms dpg_adamw dpg_sgd naive dpg_adamw_inverse
done

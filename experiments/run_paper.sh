#!/usr/bin/env bash
# The paper-regime batch of issue 12 (docs/results.md, "Protocol for the paper-regime studies"), in the order the
# fidelity benchmark ranks the studies by how much per-example credit should pay, and seed-major within a study so
# that every finished seed is a complete paired comparison. Finished arm x seed runs are skipped: rerunning resumes.
#   nohup experiments/run_paper.sh > runs/paper.log 2>&1 &
# BETA: the GRPO KL coefficient, fixed once for all arms by the control-collapse rule in docs/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BETA=0.04  # the control arm collapsed at beta = 0 (docs/results/paper/kl_pilot.json)
MAIN="dpg_adamw naive dpg_sgd control"   # the paired core of every study
MORE="first_order leave_group_out"       # after the core of every study
run() { python experiments/run.py "$1" --point "$2" --seeds "$3" --set "grpo.beta=$BETA" --arms "${@:4}"; }
for study in l2_norm uuid belief language sixseven qr_code; do
  for seed in 0 1 2; do run "$study" bs256_m4 "$seed" $MAIN; done
done
for study in l2_norm uuid belief language sixseven qr_code; do
  heuristics=""
  if [ "$study" = language ]; then heuristics="levenshtein embedding langid"; fi
  for seed in 0 1 2; do run "$study" bs256_m4 "$seed" $MORE $heuristics; done
done
for study in l2_norm sixseven; do
  for seed in 0 1 2; do
    run "$study" bs64_m1 "$seed" dpg_adamw dpg_sgd naive
    run "$study" bs1024_m16 "$seed" dpg_adamw dpg_sgd naive dpg_adamw_inverse
  done
done

#!/usr/bin/env bash
# Reduced-scale SmolLM2-135M-Instruct studies of docs/results_archive.md: 1 seed, 4 GRPO steps of 2 prompts x 4 completions
# (the configs as written), 16 end-to-end evaluation samples, arms dpg_adamw and naive. The generator is the fp32
# cache made once by python -c "from dpg.training.models import cache_smollm2; cache_smollm2('$HOME/.cache/dpg/smollm2-135m')".
# (In the recorded run the two studies ran side by side, one process each.)
set -e
cd "$(dirname "$0")/../.."
. .venv/bin/activate
GEN=${SMOLLM2_DIR:-$HOME/.cache/dpg/smollm2-135m}
for study in uuid_smollm2 language_smollm2; do
  for arm in dpg_adamw naive; do
    python -m experiments.run $study --arms $arm --seeds 0 --steps 4 --eval-n 16 --set generator.name_or_path=$GEN
  done
done

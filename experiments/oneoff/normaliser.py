"""Does DPG-SGD still collapse to empty completions on l2_norm now that the loss weights enter the normaliser?

    python -m experiments.oneoff.normaliser   # trains seeds 0 and 1 if not done yet (~1.5 min each), then reports

docs/results_archive.md (l2_norm, before the change) found DPG-SGD's generator learning to write nothing (mean sample length
20 → 2 characters, 60-70 % empty, training Φ −3.2 → −6.1): with the step's token count held fixed in dΦ/dwᵢ, a short
example looked good while shortening every completion made each remaining token weigh more. This reruns that arm
(configs/studies/l2_norm.yaml with inner SGD at lr 1.0, 40 GRPO steps) with the default weighted token mean and
reports the sampled completions' mean length and empty share in the first and last 10 steps, and training Φ.
Writes docs/results/normaliser.json.
"""

from __future__ import annotations

from experiments import env  # noqa: F401  first: the environment before torch and transformers load

import argparse
import json
from pathlib import Path

from dpg.config.schema import load_config
from dpg.run.checkpoints import read_log
from dpg.training.trainer import train

ROOT = Path(__file__).resolve().parents[2]

ARM = ["inner_sft.optimizer=sgd", "inner_sft.lr=1.0", "logging.sample_completions=16", "reward.compare_every=0"]


def stats(rows: list[dict]) -> dict:
    texts = [s["completion"] for r in rows for s in r["samples"]]
    return {"mean_chars": sum(len(t) for t in texts) / len(texts),
            "empty_share": sum(not t.strip() for t in texts) / len(texts),
            "phi": sum(r["phi"] for r in rows) / len(rows)}


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    report = {}
    for seed in (0, 1):
        out = ROOT / "runs" / "normaliser" / "dpg_sgd" / f"seed{seed}"
        if not (out / "final").exists():
            train(load_config(ROOT / "configs/studies/l2_norm.yaml", [*ARM, f"seed={seed}", f"output_dir={out}"]))
        rows = [r for r in read_log(out / "log.jsonl") if "phi" in r]
        report[f"seed{seed}"] = {"first_10_steps": stats(rows[:10]), "last_10_steps": stats(rows[-10:])}
        print(seed, json.dumps(report[f"seed{seed}"]))
    (ROOT / "docs" / "results" / "normaliser.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

"""How far can data write a picture into the LM head? The ceiling of sixseven and qr_code, and the measurement behind it.

    python -m experiments.oneoff.picture_ceiling   # -> docs/results/paper/picture_ceiling.json and a markdown table

The picture sits in the head patch hidden dims × token ids 0..w-1. A token the generator never writes is never a
target of the inner SFT, so its head column only gets the "push every absent token down" gradient Σ p_t(x)·h(x); if
those columns change alike (sign by sign), every row of the patch can match the picture in at most
max(#light, #dark) of the absent columns. The ceiling is that count plus every present column, over all pixels: the
best pixel accuracy reachable when the generator writes only tokens its pretraining text contains.

The measurement checks the premise on the paper regime's target (`--point bs256_m4`: LM-pretrained, inner AdamW at
the swept lr): one SFT run on 256 samples of the initial generator per seed, then, per row of the patch, whether
the absent columns' changes share one sign, their mean |Δ| against the present columns', and the pixel accuracy.
"""

from __future__ import annotations

from experiments import env  # first: the environment before torch and transformers load

import argparse
import json
import sys
from collections import Counter

import numpy as np
import torch

from dpg.config.schema import load_config
from dpg.training import models
from dpg.training.rewards import to_target_examples
from experiments.run import DOCS, MAIN_POINT, ROOT, arm_overrides, config_path, engine_for, sample_texts

STUDIES = ("sixseven", "qr_code")
OUT = DOCS / "paper" / "picture_ceiling.json"


def token_counts(tokenizer) -> Counter:
    """How often each token id occurs in the text the generator was pretrained on (corpus and prompts)."""
    counts = Counter()
    for line in models.corpus_lines() + models.prompt_lines():
        counts.update(tokenizer(line)["input_ids"])
    return counts


def absent_columns(width: int, col: int, counts: Counter, eos_id: int) -> list[int]:
    """Patch columns whose token never occurs in the pretraining text (EOS is every example's last target)."""
    return [b for b in range(width) if col + b != eos_id and counts[col + b] == 0]


def ceiling(picture: np.ndarray, absent: list[int]) -> float:
    """Best pixel accuracy when the absent columns of each row share one sign and every other column is free."""
    h, w = picture.shape
    a = picture[:, absent]
    matched = np.maximum((a == 1).sum(1), (a == -1).sum(1)).sum() + h * (w - len(absent))
    return float(matched / (h * w))


def measure(study: str, seed: int, generator="initial") -> dict:
    """One SFT run of the paper-regime target on 256 samples of `generator`: how the patch's absent columns move."""
    cfg = load_config(config_path(study), [*arm_overrides("dpg_adamw", MAIN_POINT), f"seed={seed}"])
    engine, objective, tok = engine_for(cfg)
    texts = sample_texts(cfg, generator, 256, seed)  # the studies' evaluation samples
    examples, _ = to_target_examples(texts, tok, cfg.inner_sft.max_length)
    res = engine.evaluate(examples)
    with torch.no_grad():
        d = objective.delta(engine.model, res.params).double().numpy()
    absent = absent_columns(d.shape[1], objective.col, token_counts(tok), tok.eos_token_id)
    present = [b for b in range(d.shape[1]) if b not in absent]
    written = Counter(t for ex in examples for t in ex)
    signs = np.sign(d[:, absent])
    return {"seed": seed, "generator": str(generator), "pixel_accuracy": res.proxies["pixel_accuracy"],
            "ceiling": ceiling(objective.target, absent),
            "absent_tokens_written": sum(written[objective.col + b] for b in absent),
            "rows_absent_alike": float(np.mean([len(set(r)) == 1 for r in signs])),
            "absent_majority_share": float(np.mean(np.maximum((signs == 1).mean(1), (signs == -1).mean(1)))),
            "abs_delta_absent": float(np.abs(d[:, absent]).mean()),
            "abs_delta_present": float(np.abs(d[:, present]).mean())}


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    env.set_threads()
    rows = []
    for study in STUDIES:
        for seed in (0, 1, 2):
            finals = sorted((ROOT / "runs" / "paper" / MAIN_POINT / study).glob(f"*/seed{seed}/final"))
            for generator in ["initial", *finals]:
                row = {"study": study, "arm": "initial" if generator == "initial" else generator.parents[1].name,
                       **measure(study, seed, generator)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    OUT.write_text(json.dumps({"command": "python -m experiments.oneoff.picture_ceiling", "rows": rows}, indent=1))
    print("| study | arm | seeds | ceiling | pixel accuracy | absent tokens written | rows with absent columns alike "
          "| absent columns with the row's majority sign | mean abs Δ absent / present |")
    print("|---|---|---|---|---|---|---|---|---|")
    keys = sorted({(r["study"], r["arm"]) for r in rows}, key=lambda k: (STUDIES.index(k[0]), k[1] != "initial", k[1]))
    for study, arm in keys:
        rs = [r for r in rows if (r["study"], r["arm"]) == (study, arm)]
        m = {k: float(np.mean([r[k] for r in rs])) for k in rs[0] if isinstance(rs[0][k], (int, float))}
        print(f"| {study} | {arm} | {len(rs)} | {m['ceiling']:.3f} | {m['pixel_accuracy']:.3f} | "
              f"{m['absent_tokens_written']:.1f} | {m['rows_absent_alike']:.2f} | {m['absent_majority_share']:.2f} | "
              f"{m['abs_delta_absent']:.2e} / {m['abs_delta_present']:.2e} |")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Names shared by the config layer and the modules that implement them, torch-free (a leaf: imports nothing of dpg).

`dpg.config` validates against these lists before any model loads; `dpg.heuristics` and the engine use the same
lists, so a value the config accepts is one the implementation knows.
"""

from __future__ import annotations

from pathlib import Path

# reward.estimator values computed from inner SFT runs (dpg/rewards.py)
SFT_ESTIMATORS = ("metagrad", "naive", "first_order", "loo", "leave_group_out")
# reward.estimator values scored from the completion text alone (dpg/heuristics.py)
HEURISTIC_ESTIMATORS = ("levenshtein", "embedding", "langid")
# dtype names accepted by inner_sft.dtype, generator.dtype and target.dtype (torch attributes of the same names)
DTYPES = ("float32", "float64", "bfloat16", "float16")
LANGUAGES_DIR = Path(__file__).resolve().parent / "data" / "languages"


def languages() -> list[str]:
    """Codes of the shipped languages (one `dpg/data/languages/<code>.txt` each)."""
    return sorted(p.stem for p in LANGUAGES_DIR.glob("*.txt"))


# the files of a run directory (OUTPUT_DIR): its config as run, and one JSON line per GRPO step
CONFIG_FILE = "config.yaml"
LOG_FILE = "log.jsonl"

"""Names shared by the config layer and the modules that implement them, torch-free (a leaf: imports nothing of dpg).

`dpg.config.schema` validates against these lists before any model loads; `dpg.training.heuristics` and the engine use the same
lists, so a value the config accepts is one the implementation knows.
"""

from __future__ import annotations

from pathlib import Path

# reward.estimator values computed from inner SFT runs (dpg/training/rewards.py)
SFT_ESTIMATORS = ("metagrad", "naive", "first_order", "loo", "leave_group_out")
# reward.estimator values scored from the completion text alone (dpg/training/heuristics.py)
HEURISTIC_ESTIMATORS = ("levenshtein", "embedding", "langid")
LANGUAGES_DIR = Path(__file__).resolve().parents[1] / "data" / "languages"


def languages() -> list[str]:
    """Codes of the shipped languages (one `dpg/data/languages/<code>.txt` each)."""
    return sorted(p.stem for p in LANGUAGES_DIR.glob("*.txt"))


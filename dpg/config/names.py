"""Names shared by the config layer and the modules that implement them, torch-free (a leaf: imports nothing of dpg).

`dpg.config` validates against these lists before any model loads; `dpg.training` (rewards, heuristics, models) uses
the same lists, so a value the config accepts is one the implementation knows.
"""

from __future__ import annotations

from pathlib import Path

# reward.estimator values computed from inner SFT runs (dpg/training/rewards.py)
SFT_ESTIMATORS = ("metagrad", "naive", "first_order", "loo", "leave_group_out")
# reward.estimator values scored from the completion text alone (dpg/training/heuristics.py)
HEURISTIC_ESTIMATORS = ("levenshtein", "embedding", "langid")
ESTIMATORS = SFT_ESTIMATORS + HEURISTIC_ESTIMATORS  # every reward.estimator value
# objective.name values built in (objectives/__init__.py registers exactly these); any other name is a
# 'module.path:callable' / 'path/to/file.py:callable', or one registered from Python (objectives.register)
OBJECTIVES = ("l2_norm", "weight_pattern", "text_loss", "target_string")
# The embedded tiny models (built by dpg.training.models): name -> the kind of tokenizer the name implies
TINY_NAMES = {"tiny": "bpe", "tiny-bpe": "bpe", "tiny-char": "char"}
TINY_POSITIONS = 256  # positions of both tiny models, known here so configs are checked against them without torch
LANGUAGES_DIR = Path(__file__).resolve().parents[1] / "data" / "languages"


def languages() -> list[str]:
    """Codes of the shipped languages (one `dpg/data/languages/<code>.txt` each)."""
    return sorted(p.stem for p in LANGUAGES_DIR.glob("*.txt"))


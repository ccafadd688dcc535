"""dpg: Dataset Policy Gradient — train synthetic-data generators with exact metagradient rewards.

    import dpg
    run = dpg.train(dpg.DPGConfig.from_yaml("configs/quickstart.yaml", ["grpo.steps=30"]))

Importing dpg (and its config layer) does not import torch: the CLI validates a config in a fraction of a second,
and the model side is imported when a function runs (the engine names below on first use).
"""

from dpg.api import attribute, check, evaluate, generate, plot, select, train
from dpg.config.schema import DPGConfig, load_config
from dpg.tools.check import CheckResult
from dpg.tools.evaluation import Evaluation
from dpg.engine.sft_config import InnerSFTConfig

_LAZY = {"MetagradEngine": "dpg.engine.metagrad", "MetagradResult": "dpg.engine.metagrad"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dpg' has no attribute {name!r}")


__all__ = ["CheckResult", "DPGConfig", "Evaluation", "InnerSFTConfig", "MetagradEngine", "MetagradResult", "attribute",
           "check", "evaluate", "generate", "load_config", "plot", "select", "train"]
__version__ = "0.1.0"

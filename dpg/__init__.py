"""dpg: Dataset Policy Gradient — train synthetic-data generators with exact metagradient rewards.

Importing dpg (and its config layer) does not import torch: the CLI validates a config in a fraction of a second,
and the torch-side names below are imported on first use.
"""

from dpg.sft_config import InnerSFTConfig

_LAZY = {"MetagradEngine": "dpg.metagrad", "MetagradResult": "dpg.metagrad"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dpg' has no attribute {name!r}")


__all__ = ["InnerSFTConfig", "MetagradEngine", "MetagradResult"]
__version__ = "0.1.0"

"""dpg: Dataset Policy Gradient — train synthetic-data generators with exact metagradient rewards."""

from dpg.metagrad import MetagradEngine, MetagradResult
from dpg.sft import InnerSFTConfig

__all__ = ["InnerSFTConfig", "MetagradEngine", "MetagradResult"]
__version__ = "0.1.0"

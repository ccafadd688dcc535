"""The whole loop from Python, in a few lines; the `dpg` command is a thin layer over these functions.

    import dpg

    cfg = dpg.DPGConfig.from_yaml("configs/quickstart.yaml", ["grpo.steps=30", "output_dir=runs/nb"])
    run = dpg.train(cfg)                                              # Path("runs/nb")
    result = dpg.evaluate(cfg, generators=["initial", run / "final"], n=64, repeats=3)
    print(result)                                                     # Φ mean ± s.e. per generator, paired Δ
    dpg.plot(run)                                                     # runs/nb/curves.png

Importing this module imports no torch; each function imports the model side when it runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dpg.config import DPGConfig, build, validate


def checked(cfg: DPGConfig) -> DPGConfig:
    """A DPGConfig built in Python, checked like a YAML file: every key, type and cross-field rule (errors name the
    dotted key). Sections may be given as mappings: DPGConfig(grpo={"steps": 5})."""
    if not isinstance(cfg, DPGConfig):
        raise TypeError(f"expected a DPGConfig (DPGConfig(...) or DPGConfig.from_yaml(path)), got {type(cfg).__name__}")
    cfg = build(DPGConfig, dataclasses.asdict(cfg), "")
    validate(cfg)
    return cfg


def train(cfg: DPGConfig, resume: bool = False, verbosity: str | None = None, overwrite: bool = False) -> Path:
    """Train a generator with DPG; returns the run directory (cfg.output_dir: log.jsonl, config.yaml, checkpoints,
    final/). `resume`: continue the run in cfg.output_dir from its newest whole checkpoint (from step 0 if it has
    none; a finished run is left as it is). `overwrite`: delete the run already in cfg.output_dir and start again.
    `verbosity`: quiet / info / debug, default cfg.logging.verbosity."""
    cfg = checked(cfg)
    from dpg import trainer

    trainer.train(cfg, resume=resume, verbosity=verbosity, overwrite=overwrite)
    return Path(cfg.output_dir)

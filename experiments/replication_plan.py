"""The replication's plan, as docs/protocols/replication.md fixes it: studies, seeds, arms, stages, sampling seeds, the
sample budget, and the order of the cells. experiments/replication.py runs the cells; experiments/replication_report.py
analyses what they leave; both read the plan from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from experiments.judge import ROOT

DOCS = ROOT / "docs" / "results" / "replication"
STUDIES = ("l2_norm", "uuid", "belief", "language", "sixseven", "qr_code")
SEEDS = tuple(range(100, 108))
MORE_SEEDS = {"l2_norm": tuple(range(108, 116)), "qr_code": tuple(range(108, 116))}  # the two low-power studies
REQUIRED = ("dpg_adamw", "naive")
SELECTION = ("select_4096", "select_40960")
OPTIONAL = ("dpg_sgd", "control")  # in this order, after every required and selection cell
STAGES = ("train", "sample", "select", "judge")
SAMPLE_SEED = 20_000
POOL_SEED = {"select_4096": 30_000, "select_40960": 40_000}
BUDGET_BYTES = 16 * 10**6  # every committed sample set together
SET_BYTES = 40_000  # the protocol's bound on one sample set, to stop optional arms before the budget is passed


def planned_seeds(study: str) -> tuple[int, ...]:
    return SEEDS + MORE_SEEDS.get(study, ())


@dataclass(frozen=True)
class Cell:
    stage: str  # train | sample | select | judge
    study: str
    name: str  # the arm, or the sample set ("initial" or an arm)
    seed: int

    def __str__(self) -> str:
        return f"{self.stage} {self.study}/{self.name}/seed{self.seed}"


def plan(studies=STUDIES, seeds=None, arms=(*REQUIRED, *SELECTION), stages=STAGES) -> list[Cell]:
    """The cells of the batch in the protocol's order: seed-major; per (study, seed) the RL pair, its samples, the
    selection arms, then the judging; the optional arms last, each over every seed and study."""
    rl = [a for a in REQUIRED if a in arms]
    sel = [a for a in SELECTION if a in arms]
    order = sorted({s for study in studies for s in planned_seeds(study) if seeds is None or s in seeds})
    pairs = [(seed, study) for seed in order for study in studies if seed in planned_seeds(study)]
    cells = []
    for seed, study in pairs:
        cells += [Cell("train", study, a, seed) for a in rl]
        cells += [Cell("sample", study, x, seed) for x in ("initial", *rl)]
        cells += [Cell("select", study, a, seed) for a in sel]
        cells += [Cell("judge", study, x, seed) for x in ("initial", *rl, *sel)]
    for arm in (a for a in OPTIONAL if a in arms):
        cells += [Cell(stage, study, arm, seed) for seed, study in pairs for stage in ("train", "sample", "judge")]
    return [c for c in cells if c.stage in stages]


def samples_bytes(docs: Path) -> int:
    return sum(f.stat().st_size for f in (docs / "samples").glob("*/seed*/*.jsonl.gz"))

"""The study configs (configs/studies/) and their runner (experiments/run.py) stay runnable: 2 GRPO steps each with the
FAST overrides of test_trainer.py, and one full pass of the runner (train, end-to-end evaluation, skip, report)."""

import json
import math
import shutil
from pathlib import Path

import pytest

from dpg.config.schema import load_config
from dpg.run.checkpoints import read_log
from dpg.training.trainer import train
from experiments import plots, run
from experiments.oneoff import eval_batch

ROOT = Path(__file__).resolve().parents[1]

FAST = ["generator.pretrain_steps=0", "grpo.prompts_per_step=2", "grpo.num_generations=2", "grpo.micro_batch_size=2",
        "grpo.max_completion_length=8", "inner_sft.microbatch_size=2", "inner_sft.max_length=16",
        "logging.progress=false", "prompts.limit=16", "checkpoint.save_every=1"]
TINY_STUDIES = ["l2_norm", "sixseven", "qr_code", "language", "uuid", "belief"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("study", TINY_STUDIES)
def test_study_config_trains_two_steps(study, tmp_path):
    cfg = load_config(ROOT / "configs/studies" / f"{study}.yaml", [*FAST, "grpo.steps=2", f"output_dir={tmp_path}"])
    train(cfg)
    rows = read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["phi"]) for r in rows)


@pytest.mark.parametrize("study", ["language_smollm2", "uuid_smollm2"])
def test_smollm2_configs_validate(study):
    cfg = load_config(ROOT / "configs/studies" / f"{study}.yaml")
    assert cfg.generator.name_or_path == "smollm2-135m" and cfg.prompts.chat
    for arm in run.STUDY_ARMS.get(study, run.CORE_ARMS):
        load_config(ROOT / "configs/studies" / f"{study}.yaml", run.ARMS[arm])


def test_runner_trains_evaluates_skips_and_reports(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # run.main changes to the repository root; monkeypatch restores the directory after
    args = ["sixseven", "--arms", "dpg_sgd", "naive", "--seeds", "0", "--steps", "2", "--eval-n", "4",
            "--runs-dir", str(tmp_path / "runs"), "--docs-dir", str(tmp_path / "docs"), "--set", *FAST]
    assert run.main(args) == 0
    result = tmp_path / "runs/sixseven/dpg_sgd/seed0/result.json"
    r = json.loads(result.read_text())
    assert [e["step"] for e in r["evals"]] == [0, 1, 2]  # initial, checkpoint-1, final
    assert all(math.isfinite(e["phi"]) and 0 <= e["readable"]["pixel_accuracy"] <= 1 for e in r["evals"])
    assert len(r["evals_own_sft"]) == 2  # the SGD arm is also judged by its own inner SFT
    assert [x["step"] for x in r["log"]] == [1, 2]
    summary = json.loads((tmp_path / "docs/sixseven.json").read_text())["summary"]
    assert set(summary) == {"dpg_sgd", "naive"}
    assert (tmp_path / "docs/sixseven.png").stat().st_size > 10_000
    assert (tmp_path / "docs/sixseven_pictures.png").is_file()
    assert "| dpg_sgd | 1 |" in capsys.readouterr().out
    stamp = result.stat().st_mtime_ns
    assert run.main(args) == 0  # finished arm x seed runs are skipped, not redone
    assert result.stat().st_mtime_ns == stamp
    assert "done already" in capsys.readouterr().out


def test_language_heuristic_arms_through_the_runner(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = ["language", "--arms", "levenshtein", "embedding", "langid", "--seeds", "0", "--steps", "2",
            "--eval-n", "4", "--runs-dir", str(tmp_path / "runs"), "--docs-dir", str(tmp_path / "docs"),
            "--set", *FAST, "checkpoint.save_every=2"]  # evaluate the initial and the final generator only
    assert run.main(args) == 0
    for arm in ("levenshtein", "embedding", "langid"):
        r = json.loads((tmp_path / f"runs/language/{arm}/seed0/result.json").read_text())
        assert 0 <= r["evals"][-1]["readable"]["language_share"] <= 1
        assert all(math.isfinite(x["phi"]) for x in r["log"])


@pytest.mark.parametrize("point", list(run.POINTS))
def test_paper_points_hold_the_total_fixed_and_every_arm_validates(point):
    """Every point sees TOTAL_EXAMPLES examples, cut into its M inner steps of INNER_BATCH; every arm builds there with
    the inner lr of its optimizer from docs/results/paper/inner_lr.json."""
    chosen = json.loads(run.INNER_LR_FILE.read_text())["chosen"]
    batch, m = (int(x.lstrip("bsm")) for x in point.split("_"))  # bsB_mM
    for arm in [*run.CORE_ARMS, "loo", "leave_group_out", "dpg_adamw_inverse"]:
        cfg = load_config(ROOT / "configs/studies/sixseven.yaml", run.arm_overrides(arm, point))
        assert cfg.grpo.completions_per_step == batch and batch * run.point_steps(point) == run.TOTAL_EXAMPLES
        assert batch // cfg.inner_sft.examples_per_step == m and cfg.target.pretrain_steps == run.TARGET_PRETRAIN_STEPS
        assert cfg.inner_sft.lr == chosen[cfg.inner_sft.optimizer]


def test_runner_at_a_paper_point(tmp_path, monkeypatch):
    """--point: the point's overrides under the --set ones (here shrunk to 2 steps of 4 completions), runs and report
    in their own directories, the command that remakes them, and ΔΦ paired with naive's."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("DPG_CACHE", str(tmp_path / "cache"))
    args = ["l2_norm", "--point", "bs64_m1", "--arms", "dpg_sgd", "naive", "--seeds", "0", "--steps", "2",
            "--eval-n", "4", "--runs-dir", str(tmp_path / "runs"), "--docs-dir", str(tmp_path / "docs"),
            "--set", *FAST, "target.pretrain_steps=3"]
    assert run.main(args) == 0
    out = tmp_path / "runs/l2_norm/dpg_sgd/seed0"
    cfg = load_config(out / "config.yaml")
    assert cfg.inner_sft.lr == json.loads(run.INNER_LR_FILE.read_text())["chosen"]["sgd"]
    assert cfg.target.pretrain_steps == 3 and cfg.prompts.repeat and cfg.checkpoint.save_every == 1
    r = json.loads((out / "result.json").read_text())
    assert r["point"] == "bs64_m1" and " --point bs64_m1 " in r["command"]
    assert r["command"].endswith(f" --runs-dir {tmp_path / 'runs'}")  # not the point's default: the command says where
    assert run.runs_arg(run.ROOT / "runs" / "x") == "runs/x"
    summary = json.loads((tmp_path / "docs/l2_norm.json").read_text())["summary"]
    paired = summary["dpg_sgd"]["e2e_vs_naive"]
    own = summary["dpg_sgd"]["e2e_phi_delta"][0] - summary["naive"]["e2e_phi_delta"][0]
    assert paired["seeds"] == 1 and math.isclose(paired["mean"], own, abs_tol=1e-12)
    assert summary["naive"]["e2e_vs_naive"] is None  # naive is the reference, not paired with itself

    # runs/ is not committed: on a fresh checkout the report gives the finished runs back, the batch skips them and
    # the report rebuilt from them is the same
    report = (tmp_path / "docs/l2_norm.json").read_text()
    shutil.rmtree(tmp_path / "runs")
    assert plots.restore(tmp_path / "docs", tmp_path / "runs") == 2
    assert plots.restore(tmp_path / "docs", tmp_path / "runs") == 0  # present runs are left alone
    assert run.main(args) == 0
    assert (tmp_path / "docs/l2_norm.json").read_text() == report


def _report(path: Path, deltas: dict[str, dict[int, float]]) -> None:
    """A study report as experiments/plots.py writes it, reduced to what the sweep reads: per arm and seed, the
    initial (Φ = 0) and final (Φ = ΔΦ) evaluation."""
    runs = {arm: [{"seed": s, "evals": [{"phi": 0.0}, {"phi": d}]} for s, d in by_seed.items()]
            for arm, by_seed in deltas.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"study": path.stem, "summary": {arm: {} for arm in deltas}, "runs": runs}))


def test_sweep_pairs_each_point_by_seed(tmp_path):
    """--sweep: per study at two or more points, ΔΦ and ΔΦ − naive's (seed by seed, over the seeds both finished)
    as mean ± standard error per point; a study at one point only is left out."""
    _report(tmp_path / "bs64_m1/l2_norm.json", {"naive": {0: 1.0, 1: 2.0, 2: 3.0}, "dpg_adamw": {0: 2.0, 1: 4.0, 2: 3.0}})
    _report(tmp_path / "bs1024_m16/l2_norm.json", {"naive": {0: 1.0, 1: 1.0}, "dpg_adamw": {0: 3.0, 1: 5.0, 2: 9.0},
                                                   "dpg_adamw_inverse": {0: 2.0}})
    _report(tmp_path / "bs1024_m16/uuid.json", {"naive": {0: 1.0}, "dpg_adamw": {0: 2.0}})
    text = plots.sweep(tmp_path)
    assert "uuid" not in text and (tmp_path / "sweep_l2_norm.png").is_file()
    row = next(line for line in text.splitlines() if line.startswith("| dpg_adamw |")).split(" | ")
    # ΔΦ at bs64_m1: mean 3, SE 1/√3; at bs1024_m16: mean 17/3 over 3 seeds; minus naive's: (1, 2, 0) and (2, 4)
    assert row[1] == f"+3.000 ± {1 / math.sqrt(3):.3f} (3)" and row[2].startswith("+5.667 ± ")
    assert row[3] == f"+1.000 ± {1 / math.sqrt(3):.3f} (3)" and row[4].startswith("+3.000 ± 1.000 (2)")
    inverse = next(line for line in text.splitlines() if line.startswith("| dpg_adamw_inverse |")).split(" | ")
    assert inverse[1] == "" and inverse[2] == "+2.000 ± nan (1)" and inverse[4].startswith("+1.000 ± nan (1)")


def test_overview_figure_of_paired_differences(tmp_path):
    _report(tmp_path / "belief.json", {"naive": {0: 1.0, 1: 2.0}, "dpg_adamw": {0: 2.0, 1: 4.0}, "control": {0: 0.0}})
    assert plots.vs_naive(plots.seed_deltas(json.loads((tmp_path / "belief.json").read_text())), "dpg_adamw") == [1, 2]
    assert plots.paired_figure(plots.reports(tmp_path), tmp_path).is_file()


def test_lead_table_pairs_dpg_adamw_with_every_arm(tmp_path):
    """--overview's last table: DPG-AdamW's ΔΦ minus each other arm's, seed by seed, over the seeds both have."""
    _report(tmp_path / "belief.json", {"naive": {0: 1.0, 1: 2.0}, "dpg_adamw": {0: 2.0, 1: 4.0, 2: 9.0},
                                       "first_order": {1: 3.0, 2: 5.0}})
    _report(tmp_path / "uuid.json", {"naive": {0: 1.0}, "dpg_adamw": {0: 3.0}})
    lines = plots.lead_table(plots.reports(tmp_path)).splitlines()
    assert lines[0] == "| dpg_adamw − arm | belief | uuid |"
    assert lines[2] == "| naive | +1.500 ± 0.500 (2) | +2.000 ± nan (1) |"
    assert lines[3] == "| first_order | +2.500 ± 1.500 (2) |  |"  # seeds 1 and 2: +1, +4


def test_eval_batch_pairs_arms_by_seed(tmp_path, monkeypatch, capsys):
    """experiments/oneoff/eval_batch.py reads `dpg evaluate` results (one per seed, cached) and pairs the arms by
    seed."""
    monkeypatch.setattr(eval_batch, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(eval_batch, "OUT", tmp_path / "out")
    for seed, base in ((0, 0.1), (1, 0.2)):
        finals = {arm: tmp_path / "runs" / "sixseven" / arm / f"seed{seed}" / "final" for arm in eval_batch.ARMS}
        for d in finals.values():
            d.mkdir(parents=True)
        gain = {"dpg_adamw": base + 0.3, "dpg_sgd": base + 0.1, "naive": base, "dpg_adamw_inverse": base + 0.2}
        result = {"sources": [{"name": "initial", "proxies": {"pixel_accuracy": {"mean": 0.5}}}]
                  + [{"name": str(finals[a]), "proxies": {"pixel_accuracy": {"mean": 0.6}}} for a in eval_batch.ARMS],
                  "differences": [{"source": str(finals[a]), "phi": {"mean": gain[a]}} for a in eval_batch.ARMS]}
        (tmp_path / "out").mkdir(exist_ok=True)
        (tmp_path / "out" / f"sixseven_seed{seed}.json").write_text(json.dumps(result))
    assert eval_batch.main() == 0
    out = capsys.readouterr().out
    assert "| dpg_adamw | +0.400 / +0.500 | +0.450 ± 0.050 | +0.300 ± 0.000 | 0.600 |" in out
    assert "dpg_adamw_inverse − dpg_adamw, paired: -0.100 ± 0.000" in out and "seeds [0, 1]" in out
    assert "pixel accuracy (initial 0.500)" in out
    with pytest.raises(SystemExit, match="l2_norm: no seed has the final generators"):
        eval_batch.main("l2_norm")
    with pytest.raises(SystemExit, match="no seed has the final generators .* under .*elsewhere"):
        eval_batch.main("sixseven", runs=tmp_path / "elsewhere")  # --runs: generators trained in another directory

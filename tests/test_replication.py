"""The held-out-judge replication's tooling (experiments/judges.yaml, judge.py, replication_plan.py, replication.py,
replication_report.py): the judges are the protocol's table, a judge is deterministic and its `train` repeat 0 is the
training recipe's SFT, the report's statistics follow the pre-registered rule, cells are skipped once done, and a lock
keeps a second process off a cell."""

import gzip
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dpg import stats
from experiments import judge as judging
from experiments import replication, replication_plan
from experiments import replication_report as reporting
from experiments.oneoff import sample_markers
from experiments.replication import Settings
from experiments.replication_plan import Cell

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "docs" / "protocols" / "replication.md"
SMALL_TARGET = ("target.pretrain_steps=5",)  # the judges' targets pretrained for 5 steps, not 300


def protocol_judges() -> dict[str, dict]:
    """The protocol's judge table: name -> target, optimizer, lr, steps, examples per step, slice."""
    rows = {}
    for line in PROTOCOL.read_text().splitlines():
        m = re.match(r"\| `(\w+)` \| (.+?) \| (AdamW|SGD) ([\d.e-]+), (\d+) steps of (\d+) \| (\d+)–(\d+) \|", line)
        if m:
            name, target, opt, lr, steps, per_step, first, last = m.groups()
            rows[name] = {"heldout": "900,000 + r" in target, "optimizer": opt.lower(), "lr": float(lr),
                          "steps": int(steps), "examples_per_step": int(per_step),
                          "samples": (int(first), int(last) + 1)}
    return rows


def test_judges_are_the_protocols_table():
    judges, primary = judging.load_judges()
    table = protocol_judges()
    assert list(judges) == list(table) and len(judges) == 7
    for name, j in judges.items():
        row = table[name]
        assert (j.optimizer, j.lr, j.steps, j.examples_per_step, j.samples, j.epochs, j.repeats) == (
            row["optimizer"], row["lr"], row["steps"], row["examples_per_step"], row["samples"], 1, 4), name
        # the run's target is pretrained with s + 1, a held-out one with 900,000 + r
        assert [j.target_for(100, r) for r in range(4)] == ([900_000 + r for r in range(4)] if row["heldout"]
                                                            else [101] * 4), name
        # repeat r shuffles with 5,000 + r; the train judge with r (its repeat 0 is the earlier batch's judge)
        assert [dict(j.recipe(r))["seed"] for r in range(4)] == [r + (0 if name == "train" else 5000) for r in range(4)]
    # the recipe judges on the run's target read disjoint slices, `long` excepted (and its role says so)
    run_target = [j.samples for j in judges.values() if j.target_seed == (1, "seed") and j.name != "long"]
    rows = [set(range(*s)) for s in run_target]
    assert len(rows) == 4 and sum(map(len, rows)) == len(set().union(*rows)) == 1024
    assert "overlaps" in judges["long"].role
    # the primary judge by the protocol's rule, as its text states it
    text = " ".join(PROTOCOL.read_text().split())
    stated = re.findall(r"\*\*([a-z_0-9, ]+)\*\* — [^`]*?the primary judge is `(\w+)`", text)
    assert len(stated) == 2
    assert primary == {study.strip(): name for studies, name in stated for study in studies.split(",")}
    assert set(primary) == set(replication_plan.STUDIES)


def test_a_wrong_judge_is_an_error_naming_it(tmp_path):
    raw = (ROOT / "experiments" / "judges.yaml").read_text().replace("    steps: 16\n", "    steps: 15\n")
    (tmp_path / "judges.yaml").write_text(raw)
    with pytest.raises(ValueError, match="judge long: steps 15, but 1024 samples in steps of 64 for 1 epoch"):
        judging.load_judges(tmp_path / "judges.yaml")


@pytest.fixture
def texts():
    lines = (ROOT / "dpg" / "data" / "corpus.txt").read_text().splitlines()
    return [" ".join(lines[i % len(lines)].split()[: 3 + i % 9]) for i in range(1024)]


def test_judge_is_deterministic_and_train_repeat_0_is_the_training_sft(tmp_path, monkeypatch, texts, one_thread):
    from dpg.config.schema import load_config
    from dpg.training import assembly
    from dpg.training.rewards import to_target_examples
    from experiments import run

    monkeypatch.setenv("DPG_CACHE", str(tmp_path / "cache"))
    first = judging.judge("l2_norm", 100, texts, "train", SMALL_TARGET)
    judging._engine.cache_clear()
    judging._target.cache_clear()
    again = judging.judge("l2_norm", 100, texts, "train", SMALL_TARGET)
    assert first == again and len(first["values"]) == 4 and len(set(first["values"])) == 4
    assert (first["mean"], first["se"]) == pytest.approx(stats.mean_se(first["values"]))

    # repeat 0: the dpg_adamw arm's own inner SFT (target seed s + 1, inner_sft.seed 0) on samples 0-255
    cfg = load_config(run.config_path("l2_norm"), [*run.arm_overrides("dpg_adamw", "bs256_m4",
                                                                      ["grpo.beta=0.04", *SMALL_TARGET]), "seed=100"])
    assert (cfg.inner_sft.lr, cfg.inner_sft.examples_per_step, cfg.inner_sft.seed) == (4.096e-3, 64, 0)
    engine, _, tok = assembly.build_engine(cfg)
    examples, _ = to_target_examples(texts[:256], tok, cfg.inner_sft.max_length)
    assert first["values"][0] == engine.evaluate(examples).value

    # a held-out target: repeat 0 fine-tunes the target pretrained with 900,000 on samples 0-255, shuffle 5,000
    held = judging.judge("l2_norm", 100, texts, "heldout_target", SMALL_TARGET)
    cfg = load_config(run.config_path("l2_norm"), [*run.arm_overrides("dpg_adamw", "bs256_m4",
                                                                      ["grpo.beta=0.04", *SMALL_TARGET]),
                                                   "seed=899999", "inner_sft.seed=5000"])
    engine, _, tok = assembly.build_engine(cfg)
    assert held["values"][0] == engine.evaluate(examples).value


def test_judge_refuses_too_few_samples(texts):
    with pytest.raises(ValueError, match="judge long reads rows 0-1023, the sample set has 1000"):
        judging.judge("l2_norm", 100, texts[:1000], "long")


# -- the report -----------------------------------------------------------------------------------------------------

# D = J(dpg_adamw) − J(naive) per seed under every judge; naive gains 0.5 over the initial generator everywhere
D = {"uuid": [0.5, 0.6, 0.4, 0.55, 0.45, 0.5, 0.52, 0.48],
     "belief": [0.2, 0.3, 0.1, 0.25, 0.15, 0.2, 0.22, 0.18],
     "language": [-0.5, -0.6, -0.4, -0.55, -0.45, -0.5, -0.52, -0.48],
     "sixseven": [0.1, -0.05, 0.2, 0.0, 0.05, -0.1, 0.15, 0.02],
     "l2_norm": [0.1, -0.1] * 8,
     "qr_code": [0.3 + 0.01 * i for i in range(16)]}


def write_scores(docs: Path, skip=()):
    judges, _ = judging.load_judges()
    for study, ds in D.items():
        for seed, d in zip(replication_plan.planned_seeds(study), ds):
            values = {"initial": 0.0, "naive": 0.5, "dpg_adamw": 0.5 + d, "select_4096": 0.5 + d / 2,
                      "select_40960": 0.6}
            for name, v in values.items():
                if (study, name, seed) in skip:
                    continue
                path = replication.scores_path(Settings(docs=docs), study, seed, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"study": study, "seed": seed, "set": name, "judges": {
                    j: {"mean": v, "se": 0.0, "values": [v] * 4, "proxies": {"norm": [-v, -v - 0.2]}}
                    for j in judges}}))


def holm_by_hand(ps: list[float]) -> list[float]:
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def test_report_statistics_on_synthetic_scores(tmp_path):
    write_scores(tmp_path)
    rep = reporting.report(tmp_path)
    assert not rep["interim"] and all(rep["complete"].values())
    primary = rep["primary"]
    ps = [stats.paired([0.5 + d for d in D[s]], [0.5] * len(D[s])).p for s in replication_plan.STUDIES]
    for study, adjusted in zip(replication_plan.STUDIES, holm_by_hand(ps)):
        r = primary[study]
        assert r["n"] == len(D[study]) and r["seeds"] == list(replication_plan.planned_seeds(study))
        assert r["mean"] == pytest.approx(sum(D[study]) / len(D[study]))
        assert r["holm_p"] == pytest.approx(adjusted)
        assert r["effect_in_naive_gains"] == pytest.approx(r["mean"] / 0.5)
    assert {s: r["decision"] for s, r in primary.items()} == {
        "uuid": "win", "belief": "win", "language": "loss", "sixseven": "tie", "l2_norm": "tie", "qr_code": "win"}
    assert (primary["uuid"]["wins"], primary["uuid"]["losses"], primary["uuid"]["sign_p"]) == (8, 0, 2 / 2**8)
    assert primary["l2_norm"]["sign_p"] == 1.0 and primary["l2_norm"]["p"] == pytest.approx(1.0)
    # secondary families, each Holm-corrected over the six studies on its own
    sel = rep["secondary"]["dpg_adamw − select_4096, primary judge"]
    ps = [stats.paired([0.5 + d for d in D[s]], [0.5 + d / 2 for d in D[s]]).p for s in replication_plan.STUDIES]
    assert [sel[s]["holm_p"] for s in replication_plan.STUDIES] == pytest.approx(holm_by_hand(ps))
    assert rep["secondary"]["select_40960 − naive, primary judge"]["uuid"]["mean"] == pytest.approx(0.1)
    # the descriptive gains over the initial generator's samples: no test, no Holm
    gains = rep["gains"]["belief"]
    assert list(gains) == ["dpg_adamw", "naive", "select_4096", "select_40960"]
    assert gains["naive"]["mean"] == pytest.approx(0.5) and gains["select_40960"]["mean"] == pytest.approx(0.6)
    assert gains["dpg_adamw"]["mean"] == pytest.approx(0.5 + sum(D["belief"]) / 8) and "holm_p" not in gains["naive"]
    assert ("| belief | heldout_target_half_lr | +0.7000 ± 0.0215 | +0.5000 ± 0.0000 | +0.6000 ± 0.0107 "
            "| +0.6000 ± 0.0000 |") in reporting.blocks(rep)["gains"]
    # and in the objective's readable units: each proxy's mean over repeats, then over seeds
    assert rep["proxies"]["uuid"]["select_40960"]["norm"] == pytest.approx(-0.7)
    assert ("| belief | heldout_target_half_lr | norm | 8 | -0.1 | -0.8 | -0.6 | -0.7 | -0.7 |"
            in reporting.blocks(rep)["proxies"])
    md = (tmp_path / "report.md").read_text()
    assert "**Final.**" in md and "tie (planned power 0.53, an upper bound)" in md
    assert "Optional arms run: none." in md


def test_an_optional_arm_run_for_fewer_seeds_says_how_many(tmp_path):
    write_scores(tmp_path)
    judges, _ = judging.load_judges()
    for seed in (100, 101):
        path = replication.scores_path(Settings(docs=tmp_path), "belief", seed, "dpg_sgd")
        path.write_text(json.dumps({"study": "belief", "seed": seed, "set": "dpg_sgd", "judges": {
            j: {"mean": 0.3, "se": 0.0, "values": [0.3] * 4, "proxies": {"norm": [1.0, 2.0]}} for j in judges}}))
    rep = reporting.report(tmp_path)
    assert not rep["interim"] and rep["optional_arms_run"] == {"dpg_sgd": 2}
    assert rep["gains"]["belief"]["dpg_sgd"]["seeds"] == [100, 101]  # descriptive, over the seeds it has
    b = reporting.blocks(rep)
    assert "Optional arms run: dpg_sgd (2 of 64 (study, seed) pairs judged)." in b["budget"][0]
    assert "| +0.3000 ± 0.0000 (2 seeds) |" in next(row for row in b["gains"] if row.startswith("| belief"))
    assert next(row for row in b["proxies"] if row.startswith("| belief")).endswith("| 1.5 (2 seeds) |")
    assert (tmp_path / "paired.png").is_file() and (tmp_path / "gains.png").is_file()


def test_an_incomplete_batch_gives_an_interim_report_without_decisions(tmp_path):
    write_scores(tmp_path, skip={("l2_norm", "naive", 115)})
    rep = reporting.report(tmp_path)
    assert rep["interim"] and not rep["complete"]["l2_norm"] and rep["complete"]["uuid"]
    assert all("decision" not in r and "holm_p" not in r for r in rep["primary"].values())
    l2 = rep["primary"]["l2_norm"]
    assert "mean" not in l2 and l2["differences"] == pytest.approx(D["l2_norm"][:15])  # per-seed values only
    assert rep["primary"]["uuid"]["mean"] == pytest.approx(0.5)  # a complete study is analysed
    assert "**Interim.**" in (tmp_path / "report.md").read_text()
    # a run reported as missing completes the study; its pair is dropped
    (tmp_path / "missing.json").write_text(json.dumps({"l2_norm/naive/seed115": "crashed, could not be resumed"}))
    rep = reporting.report(tmp_path)
    assert not rep["interim"] and rep["primary"]["l2_norm"]["n"] == 15 and "decision" in rep["primary"]["l2_norm"]


PAGE = """# Results

<!-- replication:status -->
stale
<!-- /replication:status -->

text between

<!-- replication:primary -->
<!-- /replication:primary -->
"""


def test_the_results_page_gets_the_reports_tables_between_its_markers(tmp_path):
    write_scores(tmp_path)
    page = tmp_path / "results.md"
    page.write_text(PAGE)
    rep = reporting.report(tmp_path, (page,))
    b = reporting.blocks(rep)
    text = page.read_text()
    assert "stale" not in text and "text between" in text and "**Final.**" in text
    assert "\n".join(b["primary"]) in text and "| uuid | heldout_target_half_lr | yes | 8 / 8 |" in text
    assert "\n".join(b["primary"]) in (tmp_path / "report.md").read_text()  # the same tables as report.md's
    assert b["headline"] == [
        "**l2_norm: tie** (+0 ± 0.026, 16 seeds); **uuid: win** (+0.5 ± 0.021, 8 seeds); "
        "**belief: win** (+0.2 ± 0.021, 8 seeds); **language: loss** (-0.5 ± 0.021, 8 seeds); "
        "**sixseven: tie** (+0.0463 ± 0.036, 8 seeds); **qr_code: win** (+0.375 ± 0.012, 16 seeds)."]
    reporting.embed(page, b)
    assert page.read_text() == text  # writing it again changes nothing


@pytest.mark.parametrize("bad, why", [
    ("<!-- replication:primary -->\n", "has no <!-- /replication:primary -->"),
    ("<!-- replication:tables -->\n<!-- /replication:tables -->\n", "names no report block"),
])
def test_a_broken_marker_is_an_error_naming_it(tmp_path, bad, why):
    page = tmp_path / "results.md"
    page.write_text("# Results\n\n" + bad)
    with pytest.raises(ValueError, match=why):
        reporting.embed(page, {"primary": ["| a |"]})
    assert page.read_text() == "# Results\n\n" + bad


@pytest.mark.parametrize("page", reporting.PAGES, ids=lambda p: p.name)
def test_the_committed_pages_show_the_committed_report(page):
    """The replication blocks of README.md and docs/results.md are exactly what the committed report.json renders
    to, so no table or headline can drift from the data."""
    rep = json.loads((replication_plan.DOCS / "report.json").read_text())
    shown = dict(re.findall(r"<!-- replication:(\w+) -->\n\n(.*?)\n\n<!-- /replication:\1 -->", page.read_text(), re.S))
    expected = {name: "\n".join(lines) for name, lines in reporting.blocks(rep).items()}
    assert shown, f"{page.name} shows no replication block"
    for name in shown:
        assert shown[name] == expected[name], f"{page.name} block {name!r}: run --only report and commit both"


# -- cells ------------------------------------------------------------------------------------------------------------


def test_plan_is_seed_major_in_pairs():
    cells = replication_plan.plan()
    first = cells[:12]
    assert [str(c) for c in first[:3]] == ["train l2_norm/dpg_adamw/seed100", "train l2_norm/naive/seed100",
                                           "sample l2_norm/initial/seed100"]
    assert {c.seed for c in first} == {100} and [c.stage for c in first].count("judge") == 5
    train = [c for c in cells if c.stage == "train"]
    assert len(train) == 2 * (6 * 8 + 2 * 8) and train[-1] == Cell("train", "qr_code", "naive", 115)
    assert not any(c.seed > 107 and c.study not in ("l2_norm", "qr_code") for c in cells)
    optional = replication_plan.plan(arms=["dpg_adamw", "naive", "dpg_sgd", "control"], stages=["train"])
    assert optional.index(Cell("train", "qr_code", "dpg_sgd", 115)) < optional.index(
        Cell("train", "l2_norm", "control", 100)) and optional[-1].name == "control"


def test_dry_list_counts_the_done_cells_of_each_stage(capsys, monkeypatch):
    # the committed samples and scores of uuid seed 100 are there in any checkout; its training runs only where runs/ is
    monkeypatch.chdir(ROOT)  # main moves to the repository root; the test's working directory comes back afterwards
    assert replication.main(["--dry-list", "--studies", "uuid", "--seeds", "100"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    done = {stage: sum(line.startswith("done") and f" {stage} " in line for line in lines[:-1])
            for stage in ("train", "sample", "select", "judge")}
    assert done["sample"] == 3 and done["select"] == 2 and done["judge"] == 5
    assert lines[-1] == (f"{sum(done.values())} of 12 cells done (train {done['train']}/2, sample 3/3, select 2/2, "
                         "judge 5/5)")


def test_a_cell_is_skipped_when_its_result_exists(tmp_path, monkeypatch):
    s = Settings(runs=tmp_path / "runs", docs=tmp_path / "docs")
    finished, todo = Cell("train", "uuid", "dpg_adamw", 100), Cell("train", "uuid", "naive", 100)
    replication.result_path(finished, s).parent.mkdir(parents=True)
    replication.result_path(finished, s).write_text("{}")
    ran = []

    def fake_train(cell, s):
        ran.append(cell)
        replication.result_path(cell, s).parent.mkdir(parents=True)
        replication.result_path(cell, s).write_text("{}")

    monkeypatch.setitem(replication.RUNNERS, "train", fake_train)
    assert replication.status(finished, s) == "done" and replication.status(todo, s) == "to do"
    assert replication.status(Cell("sample", "uuid", "naive", 100), s) == "waits for its training"
    assert replication.work([finished, todo], s) == [] and ran == [todo]
    assert replication.work([finished, todo], s) == [] and ran == [todo]  # both done now: nothing runs


def test_a_failed_cell_is_reported_and_the_others_run(tmp_path, monkeypatch):
    s = Settings(runs=tmp_path / "runs", docs=tmp_path / "docs")
    bad, good = Cell("train", "uuid", "dpg_adamw", 100), Cell("train", "uuid", "naive", 100)

    def fake_train(cell, s):
        if cell == bad:
            raise RuntimeError("boom")
        replication.result_path(cell, s).parent.mkdir(parents=True)
        replication.result_path(cell, s).write_text("{}")

    monkeypatch.setitem(replication.RUNNERS, "train", fake_train)
    assert replication.work([bad, good], s) == [bad]
    assert not replication.done(bad, s) and replication.done(good, s)


def test_the_lock_refuses_a_second_process(tmp_path):
    path = tmp_path / "locks" / "train.uuid.dpg_adamw.seed100.lock"
    probe = ("import sys; from pathlib import Path; from experiments.replication import cell_lock\n"
             f"with cell_lock(Path({str(path)!r})) as got: print(got)")

    def other_process() -> str:
        return subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()

    with replication.cell_lock(path) as mine:
        assert mine
        assert other_process() == "False"
    assert other_process() == "True"


def test_sample_sets_are_the_same_bytes_every_time(tmp_path):
    rows = [{"prompt": "Write about rivers:", "completion": f"text {i} ñ"} for i in range(5)]
    a = replication.write_gzip_jsonl(rows, tmp_path / "a.jsonl.gz")
    b = replication.write_gzip_jsonl(rows, tmp_path / "b.jsonl.gz")
    assert a.read_bytes() == b.read_bytes() and judging.read_samples(a) == rows


def test_degeneration_counts_the_most_common_completion():
    d = replication.degeneration(["a b", "a b", "", "c d e"])
    assert d["most_common"] == 0.5 and d["empty"] == 0.25 and d["mean_words"] == pytest.approx(7 / 4)
    assert math.isclose(d["distinct_2"], 3 / 4)  # "a b" twice, "c d", "d e"


TINY = ("generator.pretrain_steps=5", "target.pretrain_steps=5", "grpo.prompts_per_step=2", "grpo.micro_batch_size=8",
        "inner_sft.microbatch_size=4")


def test_a_two_step_pair_is_trained_sampled_and_selected(tmp_path, monkeypatch, one_thread):
    """train → sample → select at tiny sizes: the sets, their statistics and compute, the selection's top scores."""
    monkeypatch.setenv("DPG_CACHE", str(tmp_path / "cache"))
    s = Settings(steps=2, samples=16, pools={"select_4096": 24, "select_40960": 24}, run_size=8, eval_n=8, extra=TINY,
                 runs=tmp_path / "runs", docs=tmp_path / "docs")
    cells = replication_plan.plan(["l2_norm"], [100], ["dpg_adamw", "select_4096"], ["train", "sample", "select"])
    assert [str(c) for c in cells] == ["train l2_norm/dpg_adamw/seed100", "sample l2_norm/initial/seed100",
                                       "sample l2_norm/dpg_adamw/seed100", "select l2_norm/select_4096/seed100"]
    assert replication.work(cells, s) == [] and all(replication.done(c, s) for c in cells)

    stats_ = json.loads(replication.set_stats_path(s, "l2_norm", 100, "dpg_adamw").read_text())
    assert stats_["sampling_seed"] == 20_100 and stats_["samples"] == 16
    assert stats_["compute"] | {"wall_seconds": 0} == {"examples_sampled": 2 * 8, "sft_runs": 2,
                                                       "sft_runs_with_metagradient": 2, "policy_updates": 2,
                                                       "wall_seconds": 0}
    assert set(stats_["degeneration"]) >= {"distinct_2", "empty", "most_common", "mean_words"}
    rows = judging.read_samples(replication.samples_path(s, "l2_norm", 100, "initial"))
    assert len(rows) == 16 and set(rows[0]) == {"prompt", "completion"}

    # the selection: the 16 best-scored of the 24 pool examples, in a random order drawn with the seed
    out = replication.run_dir(s, "l2_norm", "select_4096", 100)
    scores = [json.loads(x)["score"] for x in (out / "scores.jsonl").read_text().splitlines()]
    pool = judging.read_samples(out / "pool.jsonl.gz")
    kept = judging.read_samples(replication.samples_path(s, "l2_norm", 100, "select_4096"))
    best = sorted(range(24), key=lambda i: -scores[i])[:16]
    assert sorted(map(json.dumps, kept)) == sorted(json.dumps(pool[i]) for i in best)
    assert kept != [pool[i] for i in sorted(best)]
    sel = json.loads(replication.set_stats_path(s, "l2_norm", 100, "select_4096").read_text())
    assert (sel["sampling_seed"], sel["compute"]["sft_runs_with_metagradient"], sel["compute"]["policy_updates"]) == (
        30_100, 3, 0)


def test_results_name_the_code_and_repository_relative_paths(tmp_path):
    """Provenance of committed files: the commit that wrote them, and paths that hold on another machine."""
    from experiments.replication import ROOT, code_version, where

    assert re.fullmatch(r"[0-9a-f]{40}(\+changes)?", code_version())
    link = ROOT / "runs" / "where-test-link"
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(tmp_path, target_is_directory=True)  # runs/ lying on another disk, as a link
    try:
        assert where(link / "x" / "final") == Path("runs/where-test-link/x/final")
    finally:
        link.unlink()
    assert where(tmp_path / "y") == tmp_path / "y"  # outside the repository: as given


def test_sample_markers_count_completions_per_set_and_seed(tmp_path):
    """experiments/oneoff/sample_markers.py: a completion counts once however many markers it carries; shares are
    per file, then averaged over the seeds that have the file."""
    def write(study, seed, name, texts):
        path = tmp_path / "samples" / study / f"seed{seed}" / f"{name}.jsonl.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wt") as f:
            f.writelines(json.dumps({"prompt": "p", "completion": c}) + "\n" for c in texts)

    write("uuid", 100, "dpg_adamw", ["a 47ea and 3f1b", "no marker", "abc", "deadbeef"])  # abc, deadbeef: no digit
    write("uuid", 101, "dpg_adamw", ["9f9", "x", "y", "z"])
    write("language", 100, "naive", ["la casa es mia", "the house", "lago", "el"])
    counts = sample_markers.shares(tmp_path)
    assert counts["uuid"]["sets"] == {"dpg_adamw": {"share": pytest.approx((0.25 + 0.25) / 2), "seeds": 2}}
    assert counts["language"]["sets"]["naive"] == {"share": 0.5, "seeds": 1}
    assert sample_markers.examples(tmp_path, "language", 100, "naive", k=1) == ["la casa es mia"]

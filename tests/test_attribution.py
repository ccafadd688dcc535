"""`dpg attribute` and `dpg select`: scores against the engine (float64), runs over fresh partitions, resuming from
partial results, selections and their files, and every bad input as one named line."""

import gzip
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import random_examples, tiny_gpt2
from datasets import Dataset, load_from_disk
from test_engine import SETUPS, val_loss

import dpg
from dpg import InnerSFTConfig, MetagradEngine, stats
from dpg.cli import main
from dpg.tools.attribution import Partial, plan, read_texts, score_examples, with_seed
from dpg.tools.select import choose, count
from dpg.training import assembly, models
from dpg.training.rewards import to_target_examples

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIG = "configs/quickstart.yaml"
# the quickstart at test size: runs of 4 (2 prompts × 2 generations), 2-example microbatches
FAST = ["generator.pretrain_steps=0", "grpo.prompts_per_step=2", "grpo.num_generations=2", "grpo.micro_batch_size=2",
        "inner_sft.microbatch_size=2", "inner_sft.max_length=16"]


def engine_for(setup="adamw", **inner):
    cfg = InnerSFTConfig(**{**SETUPS[setup], **inner}, max_length=16, dtype=torch.float64)
    return MetagradEngine(tiny_gpt2(), val_loss, cfg)


def short_texts(n: int) -> list[str]:
    """n distinct short texts (a few words of the shipped corpus): under inner_sft.max_length = 16 target tokens."""
    return [" ".join(line.split()[:4]) for line in models.corpus_lines()[:n]]


def write_jsonl(path: Path, texts: list[str], field: str = "completion") -> Path:
    rows = [{"prompt": f"p{i}", "completion": t} if field == "completion" else {"text": t} for i, t in enumerate(texts)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- scores against the engine -----------------------------------------------------------------------------------------


def test_one_run_scores_are_the_engines_metagradients():
    engine, examples = engine_for(), random_examples(7)
    got = score_examples(engine, examples, "metagrad", run_size=7)
    assert got.runs_per_repeat == 1 and got.repeats == 1
    assert torch.allclose(torch.tensor(got.scores[0], dtype=torch.float64), engine.run(examples).metagrads,
                          rtol=1e-12, atol=0)
    first_order = score_examples(engine, examples, "first_order", run_size=32)  # smaller than one run: one run
    assert torch.allclose(torch.tensor(first_order.scores[0], dtype=torch.float64), engine.first_order(examples),
                          rtol=1e-12, atol=0)
    two = score_examples(engine, examples, "metagrad", run_size=7, repeats=2)  # repeat 1: the next inner shuffle
    assert two.scores[0] == got.scores[0]
    assert torch.allclose(torch.tensor(two.scores[1], dtype=torch.float64),
                          with_seed(engine, engine.cfg.seed + 1).run(examples).metagrads, rtol=1e-12, atol=0)
    for i in range(7):
        assert (two.means[i], two.ses[i]) == stats.mean_se([two.scores[0][i], two.scores[1][i]])


def test_loo_scores_equal_retraining_without_each_example():
    # one inner step (two microbatches of 4): SFT on the examples without i is exactly weight 0 for i
    engine, examples = engine_for(microbatch_size=4), random_examples(7)
    got = score_examples(engine, examples, "loo", run_size=7)
    phi = engine.value(examples)
    for i in range(7):
        assert got.scores[0][i] == pytest.approx(phi - engine.value(examples[:i] + examples[i + 1:]), rel=1e-9,
                                                 abs=1e-13)
    assert got.phis == [phi]


def test_larger_datasets_are_scored_in_runs_over_fresh_partitions():
    engine, examples = engine_for(), random_examples(20)
    got = score_examples(engine, examples, "metagrad", run_size=8, repeats=2, seed=3)
    assert got.runs_per_repeat == 3 and len(got.phis) == 6
    for r in range(2):
        runs = [run for run, _ in plan(20, 8, 3, r)]
        assert sorted(i for run in runs for i in run) == list(range(20)) and sorted(map(len, runs)) == [6, 7, 7]
        assert all(run == sorted(run) for run in runs)  # dataset order within a run
        engine_r = with_seed(engine, engine.cfg.seed + r)
        for run in runs:
            assert torch.allclose(torch.tensor([got.scores[r][i] for i in run], dtype=torch.float64),
                                  engine_r.run([examples[i] for i in run]).metagrads, rtol=1e-12, atol=0)
    assert plan(20, 8, 3, 0) != plan(20, 8, 3, 1) and plan(20, 8, 3, 1) == plan(20, 8, 4, 0)  # repeat r: seed + r

    groups = score_examples(engine, examples, "leave_group_out", run_size=8, groups=2)
    for run, partition in plan(20, 8, 0, 0, groups=2):
        assert [len({groups.scores[0][run[p]] for p in members}) for members in partition] == [1, 1]
    with pytest.raises(ValueError, match=r"--groups: 7 groups for SFT runs of 6 examples \(the smallest run\)"):
        score_examples(engine, examples, "leave_group_out", run_size=8, groups=7)


def test_a_killed_attribution_resumes_from_its_partial_results(tmp_path, monkeypatch):
    engine, examples = engine_for(), random_examples(20)
    whole = score_examples(engine, examples, "metagrad", run_size=8, repeats=2)
    path, calls, real = tmp_path / "s.jsonl.partial", [], MetagradEngine.run

    def killed_at_the_fourth_run(self, data, weights=None):
        calls.append(len(data))
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(self, data, weights)

    monkeypatch.setattr(MetagradEngine, "run", killed_at_the_fourth_run)
    with pytest.raises(KeyboardInterrupt):
        score_examples(engine, examples, "metagrad", run_size=8, repeats=2, partial=Partial(path, "this data"))
    assert len(path.read_text().splitlines()) == 1 + 3  # the header and the three finished runs
    with open(path, "a") as f:  # a line torn by a kill in the middle of a write
        f.write('{"repeat": 1, "run": 0, "indi')
    calls.clear()
    again = score_examples(engine, examples, "metagrad", run_size=8, repeats=2, partial=Partial(path, "this data"))
    assert again.computed == len(calls) == 3 and again.scores == whole.scores
    assert len(path.read_text().splitlines()) == 1 + 6  # the torn line is gone
    with pytest.raises(ValueError, match=r"s.jsonl.partial: partial results of another attribution"):
        score_examples(engine, examples, "metagrad", run_size=8, repeats=2, partial=Partial(path, "other data"))


# -- the command and the API on the configured target ------------------------------------------------------------------


def test_attribute_on_the_configured_target_is_the_engines_metagradients(tmp_path):
    cfg = dpg.DPGConfig.from_yaml(CONFIG, [*FAST, "inner_sft.dtype=float64"])
    texts = short_texts(6)
    data = write_jsonl(tmp_path / "d.jsonl", texts, field="text")
    got = dpg.attribute(cfg, data, run_size=6, repeats=1, verbosity="quiet")
    engine, _, tok = assembly.build_engine(cfg)
    examples, truncated = to_target_examples(texts, tok, 16)
    assert truncated == 0 and got.tokens == [len(e) for e in examples]
    assert torch.allclose(torch.tensor(got.means, dtype=torch.float64), engine.run(examples).metagrads, rtol=1e-10,
                          atol=0)
    assert all(math.isnan(se) for se in got.ses)  # one repeat: no standard error


def test_cli_attribute_then_select(tmp_path, capsys):
    long = " ".join(models.corpus_lines()[20].split()[:40])
    texts = [*short_texts(11), short_texts(1)[0], long]  # a copy of the first, and one over max_length
    data = write_jsonl(tmp_path / "d.jsonl", texts)
    scores = tmp_path / "s.jsonl"
    assert main(["attribute", CONFIG, *FAST, "--data", str(data), "--out", str(scores), "--repeats", "2"]) == 0
    out, err = capsys.readouterr()
    assert "help by more than 2 s.e." in out and "split-half reliability" in out and f"wrote {scores}" in out
    assert "warning: 1 of 13 examples" in err and f"warning: {data}: 1 duplicate (" in err  # cut; a copy
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(13)) and all(r["repeats"] == 2 and r["se"] > 0 for r in rows)
    assert rows[11]["duplicate_of"] == 0 and rows[12]["truncated"] and rows[12]["tokens"] == 16
    summary = json.loads((tmp_path / "s.summary.json").read_text())
    assert summary["duplicates"] == {"copies": 1, "texts": 1} and summary["truncated"] == 1
    assert summary["run_size"] == 4 and summary["runs_per_repeat"] == 4 and summary["help"] + summary["hurt"] <= 13
    assert -1 <= summary["split_half_spearman"] <= 1
    assert not (tmp_path / "s.jsonl.partial").exists()

    api = dpg.attribute(dpg.DPGConfig.from_yaml(CONFIG, FAST), data, repeats=2, verbosity="quiet")
    assert api.means == [r["score"] for r in rows]  # the command is the API, and deterministic

    selected = tmp_path / "top.jsonl"
    args = ["select", CONFIG, *FAST, "--data", str(data), "--scores", str(scores), "--keep", "0.5", "--repeats", "2"]
    assert main([*args, "--out", str(selected)]) == 0
    out = capsys.readouterr().out
    assert "kept 6 of 13 examples (the top 6 by mean score)" in out and "selected − random" in out
    top = sorted(sorted(range(13), key=lambda i: -rows[i]["score"])[:6])
    lines = data.read_text().splitlines()
    assert selected.read_text().splitlines() == [lines[i] for i in top]  # the input's rows, as written
    assert read_texts(selected).texts == [texts[i] for i in top]
    report = json.loads((tmp_path / "top.select.json").read_text())
    assert report["indices"] == top and len(report["phi"]["random"]["values"]) == 2

    assert main([*args, "--out", str(tmp_path / "again.jsonl.gz")]) == 0  # the same seed: the same selection
    assert gzip.decompress((tmp_path / "again.jsonl.gz").read_bytes()).decode() == selected.read_text()
    assert json.loads((tmp_path / "again.select.json").read_text())["phi"] == report["phi"]
    assert main([*args, "--out", str(tmp_path / "seed1.jsonl"), "--seed", "1"]) == 0  # other random subsets
    other = json.loads((tmp_path / "seed1.select.json").read_text())["phi"]
    assert other["selected"] == report["phi"]["selected"] and other["random"] != report["phi"]["random"]


def test_select_from_a_dataset_directory_writes_one(tmp_path, capsys):
    texts = short_texts(8)
    Dataset.from_list([{"prompt": f"p{i}", "completion": t} for i, t in enumerate(texts)]).save_to_disk(
        str(tmp_path / "d"))
    out = tmp_path / "kept"
    assert main(["select", CONFIG, *FAST, "--data", str(tmp_path / "d"), "--drop-bottom", "2", "--repeats", "2",
                 "--out", str(out)]) == 0
    assert "all but the bottom 2 by mean score" in capsys.readouterr().out
    scores = [json.loads(line)["score"] for line in (tmp_path / "kept.scores.jsonl").read_text().splitlines()]
    kept = sorted(sorted(range(8), key=lambda i: -scores[i])[:6])
    assert load_from_disk(str(out)).to_list() == [{"prompt": f"p{i}", "completion": texts[i]} for i in kept]
    assert main(["select", CONFIG, *FAST, "--data", str(tmp_path / "d"), "--scores",
                 str(tmp_path / "kept.scores.jsonl"), "--keep", "2", "--out", str(out)]) == 2  # never written over
    assert f"--out: {out} is a directory" in capsys.readouterr().err


def test_selection_rules():
    means, ses = [0.3, -0.1, 0.3, 0.5, 0.05], [0.1, 0.01, 0.2, 0.1, 0.01]
    assert choose(means, ses, keep=2) == ([0, 3], "the top 2 by mean score")  # a tie goes to the earlier example
    assert choose(means, ses, keep="0.6")[0] == [0, 2, 3]
    assert choose(means, ses, drop_bottom=1)[0] == [0, 2, 3, 4]
    assert choose(means, ses, significant=True)[0] == [0, 3, 4]  # 0.3 ± 0.2 is not above 2 s.e.
    assert choose(means, ses, keep=3, significant=True)[0] == [0, 3]
    assert count("1.0", 5, "--keep") == 5 and count(1, 5, "--keep") == 1 and count(0.01, 5, "--keep") == 1
    for bad in ("0", "6", "1.5", "abc", True):
        with pytest.raises(ValueError, match="--keep: "):
            count(bad, 5, "--keep")


# -- bad input: one line naming the file, the line or the flag, exit 2, nothing written --------------------------------


def data_file(tmp_path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


BAD_DATA = [  # (file name, content, extra flags, the error after "FILE")
    ("empty.jsonl", b"", [], r": no examples \(the file is empty\)"),
    ("blank.jsonl", b"\n  \n", [], r": no examples \(the file is blank lines only\)"),
    ("number.jsonl", b'{"text": "ok"}\n{"text": 5}\n', [], r" line 2: 'text' is 5, not text"),
    ("none.jsonl", b'{"prompt": "p", "completion": null}\n', [], r" line 1: 'completion' is None, not text"),
    ("other.jsonl", b'{"text": "a"}\n\n{"completion": "b"}\n', [],
     r" line 3: no 'text' field \(the first row has one\)"),
    ("fields.jsonl", b'{"prompt": "p"}\n', [], r" line 1: no 'text' or 'completion' field \(has \['prompt'\]\)"),
    ("list.jsonl", b'["a", "b"]\n', [], r" line 1: not a JSON object"),
    ("csv.jsonl", b"text,score\nhello,1\n", [], r" line 1: not JSON \(Expecting value"),
    ("latin1.jsonl", b'{"text": "caf\xe9"}\n', [], r": not UTF-8 text \(invalid continuation byte at byte 13\)"),
    ("plain.jsonl.gz", b'{"text": "a"}\n', [], r": not a gzip file"),
    ("long.jsonl", b'{"text": "a b"}\n{"text": "' + b" the river" * 20 + b'"}\n', ["--no-truncate"],
     r" line 2: \d+ target tokens, over inner_sft.max_length = 16 \(--no-truncate; 1 such examples\)"),
]


@pytest.mark.parametrize("verb", ["attribute", "select"])
@pytest.mark.parametrize("name,content,flags,message", BAD_DATA, ids=[case[0] for case in BAD_DATA])
def test_bad_data_is_one_line_naming_the_file_and_line(tmp_path, capsys, verb, name, content, flags, message):
    path = data_file(tmp_path, name, content)
    out = tmp_path / "out" / "scores.jsonl"
    keep = ["--keep", "1"] if verb == "select" else []
    assert main([verb, CONFIG, *FAST, "--data", str(path), "--out", str(out), *keep, *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"dpg {verb}: error: {path}"), err
    assert re.search(message, err[0]), err[0]
    assert not out.parent.exists()


def test_misuse_is_one_line_naming_the_flag(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", short_texts(4))
    scores = tmp_path / "s.jsonl"
    scores.write_text("".join(json.dumps({"index": i, "score": 0.1 * i, "se": None, "repeats": 1, "text": t}) + "\n"
                              for i, t in enumerate(short_texts(4))))
    other = write_jsonl(tmp_path / "other.jsonl", short_texts(5)[1:])
    out = tmp_path / "out" / "x.jsonl"
    cases = [
        (["attribute", "--data", str(tmp_path / "nope.jsonl")], f"--data: {tmp_path / 'nope.jsonl'} is missing"),
        (["attribute", "--estimator", "naive"], "--estimator: naive gives every example of an SFT run the same score"),
        (["attribute", "--estimator", "exact"], "--estimator: unknown value 'exact'"),
        (["attribute", "--groups", "2"], "--groups: only used by --estimator leave_group_out"),
        (["attribute", "--estimator", "leave_group_out"], "--groups: --estimator leave_group_out needs --groups G"),
        (["attribute", "--run-size", "0"], "--run-size: must be an integer from 1 up, got 0"),
        (["attribute", "--repeats", "0"], "--repeats: must be an integer from 1 up, got 0"),
        (["attribute", "--device", "cuda:7"], "--device: cuda:7 is not available"),
        (["attribute", "--estimator", "leave_group_out", "--groups", "5"],
         "--groups: 5 groups for SFT runs of 4 examples"),
        (["select", "--scores", str(scores)], "select: give --keep K|FRACTION, --drop-bottom K|FRACTION or "),
        (["select", "--scores", str(scores), "--keep", "5"], "--keep: '5' is 5 examples; the data has 4"),
        (["select", "--scores", str(scores), "--keep", "half"], "--keep: expected a count (256) or a fraction"),
        (["select", "--scores", str(scores), "--keep", "1", "--drop-bottom", "1"], "--keep and --drop-bottom: "),
        (["select", "--scores", str(scores), "--significant"], "--significant: the scores have no standard errors"),
        (["select", "--keep", "1", "--significant", "--repeats", "1"], "--significant: one repeat gives no standard"),
        (["select", "--scores", str(tmp_path / "no.jsonl"), "--keep", "1"], "--scores: "),
        (["select", "--scores", str(data), "--keep", "1"], "line 1: not a row of `dpg attribute`"),
        (["select", "--data", str(other), "--scores", str(scores), "--keep", "1"],
         "line 1 does not score example 0 of"),
    ]
    for verb, flag, path in (("attribute", "data", data), ("select", "data", data), ("select", "scores", scores)):
        where = ["--scores", str(scores), "--keep", "1"] if verb == "select" else []
        assert main([verb, CONFIG, *FAST, "--data", str(data), *where, "--out", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"dpg {verb}: error: --out: {path} is the --{flag} file; give another path"
    assert data.read_text().startswith('{"prompt"') and scores.read_text().startswith('{"index"')  # untouched
    for args, message in cases:
        verb, *flags = args
        where = [] if "--data" in flags else ["--data", str(data)]
        assert main([verb, CONFIG, *FAST, *where, "--out", str(out), *flags]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"dpg {verb}: error: ") and message in err[0], (args, err)
        assert not out.parent.exists(), args


# -- several processes -------------------------------------------------------------------------------------------------


def test_two_processes_score_as_one(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", short_texts(9))
    args = ["attribute", CONFIG, *FAST, "inner_sft.dtype=float64", "--data", str(data), "--repeats", "2", "-q"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dpg", *args,
           "--out", str(tmp_path / "two.jsonl")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert main([*args, "--out", str(tmp_path / "one.jsonl")]) == 0
    two, one = ([json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
                for name in ("two", "one"))
    scale = max(abs(r["score"]) for r in one)
    assert all(abs(a["score"] - b["score"]) <= 1e-10 * scale for a, b in zip(two, one)) and len(two) == len(one) == 9

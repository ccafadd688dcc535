"""`dpg select`: keep a dataset's best examples by their attribution scores (dpg/tools/attribution.py), write them in
the input's own format, and show what the selection bought: Φ after one SFT run of the configured inner SFT on the
selection, against random subsets of the same size and against all the data, repeated with paired shuffle seeds.

The rule: the top K by mean score (`keep`), or all but the bottom K (`drop_bottom`), or every example; then, with
`significant`, only those whose mean score exceeds 2 standard errors. Ties go to the earlier example, and the kept
rows keep their order in the dataset, so a selection is a function of the scores alone; the random subsets of
repeat r are drawn with seed + r, and every set of repeat r is trained with inner_sft.seed + r.

Torch-free at import, like attribution.py.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import dpg.stats as stats
from dpg.config.schema import DPGConfig
from dpg.run import fsio
from dpg.run.console import Console
from dpg.tools.attribution import (Attribution, Processes, Texts, beside, build, check_arguments, check_out, jsonable,
                                   preview, read_texts, score_texts, tokenize, with_seed)


# -- writing -----------------------------------------------------------------------------------------------------------


def write_subset(texts: Texts, indices: list[int], out: str | Path) -> Path:
    """The rows `indices` (in dataset order) in the input's format: JSONL lines as they were written (gzip when
    `out` ends in .gz), or a new `datasets` directory. Atomic: a temporary sibling, then renamed."""
    out = Path(out)
    fsio.make_dir(out.parent)
    if texts.format == "hf":
        from datasets import load_from_disk

        if out.exists():
            raise FileExistsError(f"--out: {out} already exists; give a new directory for the dataset")
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        with fsio.writing(out, "writing the dataset"):
            load_from_disk(str(texts.path)).select(indices).save_to_disk(str(tmp))
            os.replace(tmp, out)
        return out
    body = "".join(texts.raw[i] + "\n" for i in indices)
    if out.name.endswith(".gz"):
        return _write_bytes(out, gzip.compress(body.encode("utf-8"), mtime=0))  # mtime 0: the same bytes every time
    return fsio.write_text(out, body)


def _write_bytes(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with fsio.writing(path):
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    return path




# -- choosing ----------------------------------------------------------------------------------------------------------


@dataclass
class ScoreTable:
    """Scores read back from a file `dpg attribute` wrote."""

    means: list[float]
    ses: list[float]
    repeats: int


def read_scores(path: str | Path, texts: Texts) -> ScoreTable:
    """OUT of `dpg attribute`, checked against the dataset it should score (count, order, text previews)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--scores: {path} is {'not a file' if path.exists() else 'missing'}")
    means, ses, repeats = [], [], set()
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as err:
        raise ValueError(f"--scores: {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            i, score, se = row["index"], float(row["score"]), row["se"]
            repeats.add(int(row["repeats"]))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"--scores: {path} line {n}: not a row of `dpg attribute` ({type(err).__name__}: {err})") \
                from None
        if i != len(means):
            raise ValueError(f"--scores: {path} line {n}: index {i}, expected {len(means)} (rows in dataset order)")
        if i >= len(texts.texts) or row.get("text") != preview(texts.texts[i]):
            raise ValueError(f"--scores: {path} line {n} does not score example {i} of {texts.path} (its text "
                             "differs): scores of other data?")
        if not math.isfinite(score):
            raise ValueError(f"--scores: {path} line {n}: score {score} is not finite")
        means.append(score)
        ses.append(math.nan if se is None else float(se))
    if len(means) != len(texts.texts):
        raise ValueError(f"--scores: {path} scores {len(means)} examples; {texts.path} has {len(texts.texts)}")
    return ScoreTable(means, ses, max(repeats))


def count(value, n: int, flag: str) -> int:
    """A count (256) or a fraction of the dataset (0.25; 1.0 = all), as a number of examples from 1 to n."""
    text = str(value).strip()
    try:
        k = int(text)
    except ValueError:
        try:
            fraction = float(text)
        except ValueError:
            fraction = math.nan
        if isinstance(value, bool) or not 0 < fraction <= 1:
            raise ValueError(f"{flag}: expected a count (256) or a fraction in (0, 1] (0.25), got {value!r}") from None
        k = max(1, round(fraction * n))
    if isinstance(value, bool) or not 1 <= k <= n:
        raise ValueError(f"{flag}: {value!r} is {k} examples; the data has {n}, so give 1 to {n} or a fraction")
    return k


def choose(means: list[float], ses: list[float], keep=None, drop_bottom=None, significant: bool = False) -> tuple:
    """(indices in dataset order, the rule in words): the top `keep` by mean score, or all but the bottom
    `drop_bottom`, or all; then, with `significant`, only those whose score exceeds 2 standard errors."""
    n = len(means)
    if keep is not None and drop_bottom is not None:
        raise ValueError("--keep and --drop-bottom: give one of them")
    if keep is None and drop_bottom is None and not significant:
        raise ValueError("select: give --keep K|FRACTION, --drop-bottom K|FRACTION or --significant")
    order = sorted(range(n), key=lambda i: (-means[i], i))  # ties: the earlier example first
    if keep is not None:
        k = count(keep, n, "--keep")
        chosen, rule = order[:k], f"the top {k} by mean score"
    elif drop_bottom is not None:
        k = count(drop_bottom, n, "--drop-bottom")
        if k == n:
            raise ValueError(f"--drop-bottom: {drop_bottom!r} drops all {n} examples")
        chosen, rule = order[:n - k], f"all but the bottom {k} by mean score"
    else:
        chosen, rule = order, ""
    if significant:
        if not any(math.isfinite(s) for s in ses):
            raise ValueError("--significant: the scores have no standard errors (one repeat); attribute with "
                             "--repeats 2 or more")
        chosen = [i for i in chosen if math.isfinite(ses[i]) and means[i] > 2 * ses[i]]
        rule = (f"{rule}, of those " if rule else "") + "the ones whose mean score exceeds 2 s.e."
        if not chosen:
            raise ValueError("--significant: no selected example's score exceeds 2 standard errors")
    return sorted(chosen), rule


@dataclass
class Selection:
    """What `select` kept and what it bought: Φ after one SFT run (the configured inner SFT) on the selection, on a
    random subset of the same size and on all the data, per repeat (paired by the inner shuffle seed)."""

    data: str
    out: str
    indices: list[int]
    examples: int
    rule: str
    seed: int
    phi: dict[str, list[float]]  # "selected", "random", "all": one Φ per repeat

    def difference(self, other: str) -> stats.Paired:
        return stats.paired(self.phi["selected"], self.phi[other])

    def table(self) -> str:
        r = len(self.phi["selected"])
        each = f"mean ± s.e. over {r} repeats, paired by shuffle seed" if r > 1 else "1 repeat: no error bar"
        k = len(self.indices)
        names = {"selected": f"selected ({k})", "random": f"random {k}", "all": f"all {self.examples}"}
        lines = [f"kept {k} of {self.examples} examples ({self.rule}) → {self.out}",
                 f"Φ after one SFT run of the target on each set ({each}; higher is better)"]
        for key, name in names.items():
            lines.append(f"  {name:<22} {_estimate(*stats.mean_se(self.phi[key]))}")
        for other in ("random", "all"):
            d = self.difference(other)
            test = "" if d.n < 2 else (f"  (t = {d.t:.2f}, p = {d.p:.2g}; higher in {d.wins} of {d.n} repeats)")
            lines.append(f"  {'selected − ' + other:<22} {_estimate(d.mean, d.se, sign=True)}{test}")
        return "\n".join(lines)

    __str__ = table

    def to_dict(self) -> dict:
        return jsonable({"data": self.data, "out": self.out, "kept": len(self.indices), "examples": self.examples,
                      "rule": self.rule, "seed": self.seed, "repeats": len(self.phi["selected"]),
                      "phi": {k: {"mean": stats.mean_se(v)[0], "se": stats.mean_se(v)[1], "values": v}
                              for k, v in self.phi.items()},
                      "selected_minus_random": self.difference("random").to_dict(),
                      "selected_minus_all": self.difference("all").to_dict(), "indices": self.indices})


def _estimate(mean: float, se: float, sign: bool = False) -> str:
    text = f"{mean:+.4g}" if sign else f"{mean:.4g}"
    return text + ("" if not math.isfinite(se) else f" ± {se:.2g}")


def select(cfg: DPGConfig, data: str | Path, out: str | Path, keep=None, drop_bottom=None, significant: bool = False,
           scores: str | Path | Attribution | None = None, estimator: str = "metagrad", groups: int | None = None,
           run_size: int | None = None, repeats: int = 4, seed: int = 0, truncate: bool = True,
           device: str | None = None, verbosity: str = "info") -> Selection:
    """Keep the best examples of `data` by score and write them to `out` in the input's format; report Φ of one SFT
    run on them against random subsets of the same size. Without `scores` (a file from `attribute`, or an
    Attribution), they are computed first (`estimator` … `seed`) and written beside `out` (.scores.jsonl)."""
    check_arguments(estimator, groups, run_size, repeats, seed)
    check_out(out, data=data, scores=None if isinstance(scores, Attribution) else scores)
    texts = read_texts(data)
    table = scores if isinstance(scores, Attribution) else read_scores(scores, texts) if scores is not None else None
    if table is not None:
        chosen, rule = choose(table.means, table.ses, keep, drop_bottom, significant)
    else:  # the rule's flags are checked before the scores are computed
        if significant and repeats < 2:
            raise ValueError("--significant: one repeat gives no standard errors; use --repeats 2 or more")
        choose([0.0] * len(texts.texts), [1.0] * len(texts.texts), keep, drop_bottom)
    out = Path(out)
    if texts.format == "hf" and out.exists():
        raise FileExistsError(f"--out: {out} already exists; give a new directory for the dataset")
    procs = Processes(device)
    try:
        console = Console(verbosity if procs.main else "quiet", cfg.logging.progress)
        engine, tok = build(cfg, device, procs, console)
        examples, long = tokenize(texts, tok, cfg.inner_sft.max_length, truncate, console)
        if table is None:
            table = score_texts(cfg, texts, examples, long, engine, estimator, groups, run_size, repeats, seed,
                                beside(out, ".scores.jsonl"), console, procs)
            chosen, rule = choose(table.means, table.ses, keep, drop_bottom, significant)
        selection = Selection(str(texts.path), str(out), chosen, len(examples), rule, seed,
                              compare(engine, examples, chosen, repeats, seed, console))
        if procs.main:
            write_subset(texts, chosen, out)
            report = fsio.write_text(beside(out, ".select.json"), json.dumps(selection.to_dict(), indent=1) + "\n")
            console.result(selection.table())
            console.result(f"wrote {out} and {report}")
        return selection
    finally:
        procs.close()


def compare(engine, examples: list[list[int]], chosen: list[int], repeats: int, seed: int,
            console: Console) -> dict[str, list[float]]:
    """Φ after one SFT run on the selection, on a random subset of its size (drawn with seed + r) and on all the
    examples, each repeat r shuffled with inner_sft.seed + r."""
    import torch

    phi = {"selected": [], "random": [], "all": []}
    with console.progress(3 * repeats, description="SFT runs"):
        for r in range(repeats):
            engine_r = with_seed(engine, engine.cfg.seed + r)
            gen = torch.Generator().manual_seed(seed + r)
            random = sorted(torch.randperm(len(examples), generator=gen)[:len(chosen)].tolist())
            for name, indices in (("selected", chosen), ("random", random), ("all", range(len(examples)))):
                phi[name].append(engine_r.value([examples[i] for i in indices]))
                console.advance()
            console.debug(f"repeat {r + 1}/{repeats}: " + "  ".join(f"{k} {v[-1]:.4g}" for k, v in phi.items()))
    return phi

"""`dpg attribute`: score every example of a dataset by what it does to Φ (`dpg select`, dpg/tools/select.py, keeps
the best).

A score is what the reward path would give the example: dΦ/dwᵢ at w = 1 (`metagrad`; or `first_order`, `loo`,
`leave_group_out`, with reward.estimator's semantics, dpg/training/rewards.py) inside one SFT run of the configured
inner SFT holding `run_size` examples — by default what one reward call trains on (grpo.prompts_per_step ×
num_generations with cross_group batching, prompts_per_step with inverse_groups). A dataset larger than that is cut
at random into runs of at most `run_size` examples (sizes as equal as possible) and each run is scored on its own;
repeat r draws a fresh partition (seed + r) and a fresh inner shuffle (inner_sft.seed + r), so every example gets one
score per repeat, whose mean and standard error are reported. Within a run, each example is given in dataset order,
so a dataset of one run scores exactly as `engine.run(examples)` does.

Scores depend on their company: metagradient scores of one inner step sum to zero (docs/estimators.md), so a score
ranks an example against the ones it was trained with, and the repeats average over random company.

Files (`attribute(out=...)`): OUT (one JSON row per example: index, score, se, repeats, tokens, truncated,
duplicate_of, a text preview), OUT's summary beside it (`.summary.json`), and while it runs OUT.partial, one line per
finished (repeat, run), so that a rerun skips them. The results are written atomically at the end; OUT.partial is
then deleted.

Torch-free at import (the CLI checks its flags first); the scoring functions import the model side when they run.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import math
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import dpg.stats as stats
from dpg.config.names import SFT_ESTIMATORS
from dpg.config.schema import DPGConfig
from dpg.run import fsio
from dpg.run.console import Console

# reward.estimator's SFT estimators that give each example of a run its own score (naive gives a run one value)
ESTIMATORS = tuple(e for e in SFT_ESTIMATORS if e != "naive")
PREVIEW_CHARS = 80


# -- reading datasets --------------------------------------------------------------------------------------------------


@dataclass
class Texts:
    """A dataset's examples: the text of each row, where each came from, and (JSONL) each row as written, which
    `select` writes back unchanged."""

    path: Path
    format: str  # "jsonl" (plain or gzip) or "hf" (a `datasets` directory)
    field: str  # "text", or "completion" (what `dpg generate` writes beside "prompt")
    texts: list[str]
    rows: list[int]  # JSONL: the file line of each example (1-based; blank lines are skipped); hf: the row
    raw: list[str] | None = None

    def where(self, i: int) -> str:
        return f"{self.path} {'row' if self.format == 'hf' else 'line'} {self.rows[i]}"


def read_texts(path: str | Path) -> Texts:
    """The texts of a JSONL file (.jsonl.gz: gzip), or of a dataset directory saved by `datasets`: each row's "text"
    field, or else its "completion" (the first row decides which). Every error names the file and the line."""
    path = Path(path)
    if path.is_dir():
        return _read_dataset_dir(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data: {path} is {'not a file' if path.exists() else 'missing'}")
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: not a gzip file ({err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    texts, rows, raw, name = [], [], [], None
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028 and friends
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise ValueError(f"{path} line {n}: not JSON ({err})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path} line {n}: not a JSON object with a 'text' or 'completion' field")
        name = name or _text_field(row.keys(), f"{path} line {n}")
        texts.append(_text(row, name, f"{path} line {n}"))
        rows.append(n)
        raw.append(line)
    if not texts:
        raise ValueError(f"{path}: no examples (the file is {'empty' if not text else 'blank lines only'})")
    return Texts(path, "jsonl", name, texts, rows, raw)


def _read_dataset_dir(path: Path) -> Texts:
    from datasets import Dataset, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except FileNotFoundError:
        raise ValueError(f"{path}: a directory, but not a dataset saved by `datasets` (dpg generate --format hf)") \
            from None
    if not isinstance(ds, Dataset):
        raise ValueError(f"{path}: a dataset with splits {list(ds)}; give the directory of one split")
    name = _text_field(ds.column_names, f"{path}")
    texts = [_text(row, name, f"{path} row {i}") for i, row in enumerate(ds.select_columns([name]))]
    if not texts:
        raise ValueError(f"{path}: no examples (the dataset has no rows)")
    return Texts(path, "hf", name, texts, list(range(len(texts))))


def _text_field(keys, where: str) -> str:
    for name in ("text", "completion"):
        if name in keys:
            return name
    raise ValueError(f"{where}: no 'text' or 'completion' field (has {sorted(keys)})")


def _text(row: dict, name: str, where: str) -> str:
    if name not in row:
        raise ValueError(f"{where}: no {name!r} field (the first row has one)")
    value = row[name]
    if not isinstance(value, str):
        raise ValueError(f"{where}: {name!r} is {preview(repr(value))}, not text")
    # valid UTF-8, as the reward path makes every completion (rewards.completion_text): lone surrogates become "?"
    return value.encode("utf-8", errors="replace").decode("utf-8")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun[:-1]}ies" if noun.endswith("y") else f"{n} {noun}s"


def _span(first: int, last: int) -> str:
    return f"{first}" if first == last else f"{first}-{last}"


def preview(text: str, n: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


# -- output files ------------------------------------------------------------------------------------------------------


def jsonable(value):
    """JSON has no NaN or inf: a missing standard error (one repeat) is null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def beside(out: str | Path, suffix: str) -> Path:
    """scores.jsonl → scores<suffix> (also for .jsonl.gz, .json and directories)."""
    out = Path(out)
    stem = out.name
    for ext in (".jsonl.gz", ".jsonl", ".json", ".gz"):
        if stem.endswith(ext):
            stem = stem[:-len(ext)]
            break
    return out.with_name(stem + suffix)


# -- checking arguments ------------------------------------------------------------------------------------------------


def check_arguments(estimator: str, groups: int | None, run_size: int | None, repeats: int, seed: int) -> None:
    """Errors that need no model: one line naming the flag and the value."""
    if estimator == "naive":
        raise ValueError(f"--estimator: naive gives every example of an SFT run the same score (the run's Φ), so it "
                         f"attributes nothing; choose one of {list(ESTIMATORS)}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"--estimator: unknown value {estimator!r}; choose one of {list(ESTIMATORS)}")
    if estimator == "leave_group_out" and groups is None:
        raise ValueError("--groups: --estimator leave_group_out needs --groups G (random groups per SFT run)")
    if estimator != "leave_group_out" and groups is not None:
        raise ValueError(f"--groups: only used by --estimator leave_group_out, got --groups {groups} with --estimator "
                         f"{estimator}")
    for flag, value, low in (("--groups", groups, 1), ("--run-size", run_size, 1), ("--repeats", repeats, 1),
                             ("--seed", seed, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value < 2**63):
            raise ValueError(f"{flag}: must be an integer from {low} up, got {value!r}")


def check_out(out: str | Path | None, **inputs) -> None:
    """`--out` must not be one of the files it is computed from: writing it would destroy them."""
    for flag, path in inputs.items():
        if out is not None and path is not None and Path(out).resolve() == Path(path).resolve():
            raise ValueError(f"--out: {out} is the --{flag} file; give another path")


def default_run_size(cfg: DPGConfig) -> int:
    """What one SFT run of a reward call trains on: the whole batch (cross_group) or one completion per prompt."""
    return cfg.grpo.completions_per_step if cfg.reward.batching == "cross_group" else cfg.grpo.prompts_per_step


def plan(n: int, run_size: int, seed: int, repeat: int, groups: int | None = None) -> list[tuple[list, list | None]]:
    """Repeat `repeat`'s SFT runs: ⌈n / run_size⌉ runs of positions drawn at random with seed + repeat (dataset
    order within a run), and for leave_group_out each run's random groups (positions within the run), same draw."""
    import torch

    from dpg.training.rewards import random_partition

    gen = torch.Generator().manual_seed(seed + repeat)
    runs = random_partition(n, math.ceil(n / run_size), gen)
    return [(run, random_partition(len(run), groups, gen) if groups else None) for run in runs]


# -- scoring -----------------------------------------------------------------------------------------------------------


@dataclass
class Scores:
    """Per-repeat scores of every example, and Φ of every scored SFT run (none for first_order)."""

    scores: list[list[float]]  # [repeat][example]
    phis: list[float]
    runs_per_repeat: int
    computed: int  # SFT runs scored by this call (the others came from the partial file)
    seconds: float

    @property
    def repeats(self) -> int:
        return len(self.scores)

    @property
    def means(self) -> list[float]:
        return [stats.mean_se(col)[0] for col in zip(*self.scores)]

    @property
    def ses(self) -> list[float]:
        return [stats.mean_se(col)[1] for col in zip(*self.scores)]


def score_run(engine, data: list[list[int]], estimator: str, partition: list | None = None):
    """(scores, Φ) of one SFT run: the parts of compute_rewards (dpg/training/rewards.py) for one run, without the
    extra SFT run that it spends on logging Φ for first_order."""
    from dpg.training.rewards import removal_rewards

    if estimator == "metagrad":
        res = engine.run(data)
        return res.metagrads.double().tolist(), res.value
    if estimator == "first_order":
        return engine.first_order(data).double().tolist(), None
    value = engine.value(data)
    partition = [[i] for i in range(len(data))] if estimator == "loo" else partition
    return removal_rewards(engine, data, partition, value).tolist(), value


def with_seed(engine, seed: int):
    """The same target and objective, with the inner SFT shuffled by `seed`."""
    from dpg.engine.metagrad import MetagradEngine

    if engine.cfg.seed == seed:
        return engine
    return MetagradEngine(engine.model, engine.objective, dataclasses.replace(engine.cfg, seed=seed),
                          data_parallel=engine.shard[1] > 1)


def score_examples(engine, examples: list[list[int]], estimator: str = "metagrad", run_size: int = 32,
                   repeats: int = 1, seed: int = 0, groups: int | None = None, partial: Partial | None = None,
                   console: Console | None = None) -> Scores:
    """Score every example in runs of at most `run_size`, `repeats` times (see the module docstring). `partial`:
    finished (repeat, run)s are read from it and skipped, and each one finished here is appended to it."""
    n = len(examples)
    smallest = n // math.ceil(n / run_size)
    if groups is not None and groups > smallest:
        raise ValueError(f"--groups: {groups} groups for SFT runs of {smallest} examples (the smallest run); need "
                         f"1 ≤ groups ≤ {smallest}")
    console = console or Console("quiet")
    done = partial.load() if partial is not None else {}
    scores = [[math.nan] * n for _ in range(repeats)]
    phis, computed, t0 = [], 0, time.perf_counter()
    plans = [plan(n, run_size, seed, r, groups) for r in range(repeats)]
    total = sum(map(len, plans))
    with console.progress(total, completed=sum(key in done for key in _keys(plans)), description="SFT runs"):
        for r, runs in enumerate(plans):
            engine_r = with_seed(engine, engine.cfg.seed + r)
            for j, (run, partition) in enumerate(runs):
                if (r, j) in done:
                    got = done[(r, j)]
                    if got["indices"] != run:
                        raise ValueError(f"{partial.path}: repeat {r} run {j} holds other examples than this "
                                         "attribution draws; delete the file to start again")
                    run_scores, phi = got["scores"], got["phi"]
                else:
                    run_scores, phi = score_run(engine_r, [examples[i] for i in run], estimator, partition)
                    computed += 1
                    if partial is not None:
                        partial.append(r, j, run, run_scores, phi)
                    console.advance()
                for i, s in zip(run, run_scores):
                    scores[r][i] = s
                if phi is not None:
                    phis.append(phi)
            left = sum(len(p) for p in plans[r + 1:])
            elapsed = time.perf_counter() - t0
            eta = f"; about {elapsed / computed * left:.0f} s left" if computed and left else ""
            console.info(f"repeat {r + 1}/{repeats}: {len(runs)} SFT runs scored, {elapsed:.0f} s{eta}")
    return Scores(scores, phis, len(plans[0]), computed, time.perf_counter() - t0)


def _keys(plans):
    return [(r, j) for r, runs in enumerate(plans) for j in range(len(runs))]


class Partial:
    """OUT.partial: a header naming what is attributed (a hash of the examples, target, objective, inner SFT and
    flags), then one line per finished (repeat, run). A line torn by a kill is dropped; another attribution's
    file is refused rather than mixed in."""

    def __init__(self, path: str | Path, fingerprint: str, procs: Processes | None = None):
        self.path, self.fingerprint, self.procs = Path(path), fingerprint, procs
        self.write = procs is None or procs.main  # under torchrun the main process reads and writes it

    def load(self) -> dict:
        """The finished (repeat, run)s, on every process as the main process read them."""
        done = self._read() if self.write else None
        return done if self.procs is None else self.procs.share(done)

    def _read(self) -> dict:
        lines = self.path.read_text(encoding="utf-8").split("\n") if self.path.exists() else []
        good, done = [], {}
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                if n == len(lines):  # the last line, cut short by a kill: that run is scored again
                    break
                raise ValueError(f"{self.path} line {n}: not JSON; delete the file to start again") from None
            if not good:  # the header
                if not isinstance(row, dict) or row.get("attribution") != self.fingerprint:
                    raise ValueError(f"{self.path}: partial results of another attribution (other data, config or "
                                     "flags); delete it to start again, or give another --out")
            elif isinstance(row, dict) and {"repeat", "run", "indices", "scores", "phi"} <= row.keys():
                done[(row["repeat"], row["run"])] = row
            else:
                raise ValueError(f"{self.path} line {n}: not a finished run; delete the file to start again")
            good.append(line)
        if not good:  # a new file, or a header cut short
            good = [json.dumps({"attribution": self.fingerprint})]
        if good != [x for x in lines if x.strip()]:  # rewritten whole: appends must not join a torn line
            fsio.write_text(self.path, "".join(x + "\n" for x in good))
        return done

    def append(self, repeat: int, run: int, indices: list[int], scores: list[float], phi: float | None) -> None:
        if self.write:
            fsio.append_line(self.path, json.dumps({"repeat": repeat, "run": run, "indices": indices,
                                                    "scores": scores, "phi": phi}))

    def remove(self) -> None:
        if self.write and self.path.exists():
            with fsio.writing(self.path, "deleting"):
                self.path.unlink()


def fingerprint(cfg: DPGConfig, examples: list[list[int]], estimator: str, groups, run_size: int, seed: int) -> str:
    config = cfg.to_dict()
    settings = {"examples": examples, "estimator": estimator, "groups": groups, "run_size": run_size, "seed": seed,
                "config": {k: config[k] for k in ("target", "objective", "inner_sft", "seed")}}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


# -- the model side: processes, device, engine -------------------------------------------------------------------------


class Processes:
    """One process, or every process of a torchrun launch (WORLD_SIZE > 1): each holds every example and computes
    its shard of each SFT run (the data-parallel engine); the first one reads and writes the files."""

    def __init__(self, device: str | None):
        import torch.distributed as dist

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.started = False
        if self.world > 1 and not dist.is_initialized():
            import torch

            gpus = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
            dist.init_process_group("nccl" if gpus else "gloo")
            self.started = True
        self.rank = dist.get_rank() if self.world > 1 else 0
        self.main = self.rank == 0

    def share(self, obj):
        """The main process's `obj` on every process."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.started:
            import torch.distributed as dist

            dist.destroy_process_group()


def check_device(device: str | None, world: int):
    """`--device` as a torch device (None: the default), refused with one line where it is not there."""
    import torch

    if device is None:
        return None
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device: {device!r} is not a device (cpu, cuda, cuda:N)") from None
    if world > 1 and dev.type != "cpu":
        raise ValueError(f"--device: under torchrun each process uses its own GPU (LOCAL_RANK); give --device cpu or "
                         f"none, got {device}")
    if dev.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0 or (dev.index or 0) >= count:
            raise ValueError(f"--device: {device} is not available ({count} CUDA devices here)")
        dev = torch.device("cuda", dev.index or 0)
    elif dev.type != "cpu":
        raise ValueError(f"--device: {device!r}; dpg runs the target on cpu or cuda")
    return dev


def build(cfg: DPGConfig, device: str | None, procs: Processes, console: Console):
    """(engine, target tokenizer) on `device` (default: where `dpg train` would put the target)."""
    from dpg.run.console import quiet_libraries

    quiet_libraries(console.verbosity)  # before the model modules are imported: some of the noise comes at import
    from dpg.engine.metagrad import MetagradEngine
    from dpg.training import assembly

    dev = check_device(device, procs.world)
    engine, objective, tok = assembly.build_engine(cfg, data_parallel=procs.world > 1)
    if dev is not None and dev != engine.device:
        engine = MetagradEngine(engine.model.to(dev), objective, cfg.inner_sft, data_parallel=procs.world > 1)
    return engine, tok


def tokenize(texts: Texts, tokenizer, max_length: int, truncate: bool, console: Console):
    """The reward path's examples ([BOS] + tokens + [EOS], cut to max_length) and which were cut; with
    truncate=False an example over max_length is an error naming its line."""
    from dpg.training.rewards import to_target_examples

    examples, _ = to_target_examples(texts.texts, tokenizer, max_length)
    full, _ = to_target_examples(texts.texts, tokenizer, 2**62)  # the untruncated lengths
    long = [i for i, ids in enumerate(full) if len(ids) > max_length]
    if long and not truncate:
        i = long[0]
        raise ValueError(f"{texts.where(i)}: {len(full[i])} target tokens, over inner_sft.max_length = {max_length} "
                         f"(--no-truncate; {len(long)} such examples)")
    if long:
        console.warn(f"{len(long)} of {_plural(len(examples), 'example')} of {texts.path} are longer than "
                     f"inner_sft.max_length = {max_length} target tokens and were cut to it, as the trainer does "
                     "(--no-truncate refuses them)")
    return examples, set(long)


def duplicates(examples: list[list[int]]) -> list[int | None]:
    """For each example, the index of the first one with the same target tokens (None for a first occurrence)."""
    first: dict[tuple, int] = {}
    return [None if first.setdefault(tuple(ids), i) == i else first[tuple(ids)] for i, ids in enumerate(examples)]


# -- attribute ---------------------------------------------------------------------------------------------------------


@dataclass
class Attribution:
    """Every example's score (mean over repeats ± standard error) with what it was scored on. `rows()` is what
    OUT holds, `summary()` what OUT's .summary.json holds, `report()` what `dpg attribute` prints."""

    data: str
    estimator: str
    groups: int | None
    run_size: int
    seed: int
    result: Scores
    texts: list[str] = field(repr=False)
    tokens: list[int] = field(repr=False)
    truncated: list[bool] = field(repr=False)
    duplicate_of: list[int | None] = field(repr=False)

    @property
    def means(self) -> list[float]:
        return self.result.means

    @property
    def ses(self) -> list[float]:
        return self.result.ses

    @property
    def repeats(self) -> int:
        return self.result.repeats

    def rows(self) -> list[dict]:
        return [{"index": i, "score": m, "se": se, "repeats": self.repeats, "tokens": self.tokens[i],
                 "truncated": self.truncated[i], "duplicate_of": self.duplicate_of[i], "text": preview(self.texts[i])}
                for i, (m, se) in enumerate(zip(self.means, self.ses))]

    def summary(self) -> dict:
        import torch

        from dpg.training.rewards import spearman

        means, ses, n = self.means, self.ses, len(self.texts)
        with_se = self.repeats > 1
        half = self.repeats // 2
        split_half = None
        if with_se:
            a = torch.tensor(self.result.scores[:half], dtype=torch.float64).mean(0)
            b = torch.tensor(self.result.scores[half:], dtype=torch.float64).mean(0)
            split_half = spearman(a, b) if n > 2 else None
        order = sorted(range(n), key=lambda i: (-means[i], i))
        rows = self.rows()
        copies = [d for d in self.duplicate_of if d is not None]
        phi = stats.mean_se(self.result.phis) if self.result.phis else None
        total = self.repeats * self.result.runs_per_repeat
        return jsonable({
            "data": self.data, "examples": n, "estimator": self.estimator, "groups": self.groups,
            "run_size": self.run_size, "runs_per_repeat": self.result.runs_per_repeat, "repeats": self.repeats,
            "seed": self.seed, "truncated": sum(self.truncated),
            "duplicates": {"copies": len(copies), "texts": len(set(copies))},
            "help": sum(m - 2 * s > 0 for m, s in zip(means, ses)) if with_se else None,
            "hurt": sum(m + 2 * s < 0 for m, s in zip(means, ses)) if with_se else None,
            "split_half_spearman": split_half,
            "split_half": [half, self.repeats - half] if with_se else None,
            "phi_of_a_run": None if phi is None else {"mean": phi[0], "se": phi[1], "runs": len(self.result.phis)},
            "best": [rows[i] for i in order[:5]], "worst": [rows[i] for i in order[-5:][::-1]],
            "sft_runs": {"total": total, "computed": self.result.computed}, "seconds": self.result.seconds,
            # this call's rate: runs read back from a partial file took no time here
            "examples_per_second": n * self.repeats * self.result.computed / total / self.result.seconds
            if self.result.computed else None})

    def report(self) -> str:
        s = self.summary()
        runs = s["runs_per_repeat"]
        size = f"at most {self.run_size} examples" if runs > 1 else f"all {s['examples']} examples"
        lines = [f"scores = {'dΦ/dwᵢ at w = 1' if self.estimator == 'metagrad' else self.estimator} in SFT runs of "
                 f"{size} (mean over {self.repeats} repeat{'s' * (self.repeats > 1)} of {runs} run{'s' * (runs > 1)})"]
        if s["help"] is not None:
            lines.append(f"  help by more than 2 s.e.: {s['help']}   hurt by more than 2 s.e.: {s['hurt']}   "
                         f"neither: {s['examples'] - s['help'] - s['hurt']}")
            rho = s["split_half_spearman"]
            first, second = _span(1, s["split_half"][0]), _span(s["split_half"][0] + 1, self.repeats)
            lines.append(f"  split-half reliability (Spearman of the mean scores of repeats {first} and {second}): "
                         + ("–" if rho is None else f"{rho:.3f}"))
        else:
            lines.append("  one repeat: no standard errors and no split-half reliability (use --repeats ≥ 2)")
        if s["phi_of_a_run"]:
            phi = s["phi_of_a_run"]
            se = "" if phi["se"] is None else f" ± {phi['se']:.2g}"
            lines.append(f"  Φ after one SFT run: {phi['mean']:.4g}{se} (mean over {phi['runs']} runs)")
        if s["duplicates"]["copies"]:
            lines.append(f"  duplicates: {_plural(s['duplicates']['copies'], 'copy')} of "
                         f"{_plural(s['duplicates']['texts'], 'example')} (the same target tokens); each copy was "
                         "scored as an example of its own")
        for key in ("best", "worst"):
            for row in s[key][:3]:
                se = "" if row["se"] is None else f" ± {row['se']:.1e}"
                text = json.dumps(row["text"], ensure_ascii=False)
                lines.append(f"  {key:<5} #{row['index']:<5} {row['score']:+.3e}{se}  {text}")
        return "\n".join(lines)

    def write(self, out: str | Path) -> tuple[Path, Path]:
        out = Path(out)
        fsio.make_dir(out.parent)
        fsio.write_text(out, "".join(json.dumps(jsonable(r), ensure_ascii=False) + "\n" for r in self.rows()))
        summary = fsio.write_text(beside(out, ".summary.json"), json.dumps(self.summary(), indent=1,
                                                                           ensure_ascii=False) + "\n")
        return out, summary


def attribute(cfg: DPGConfig, data: str | Path, estimator: str = "metagrad", groups: int | None = None,
              run_size: int | None = None, repeats: int = 4, seed: int = 0, out: str | Path | None = None,
              truncate: bool = True, device: str | None = None, verbosity: str = "info") -> Attribution:
    """Score every example of `data` (see the module docstring); with `out`, write the scores, the summary and,
    while it runs, the partial results that a rerun resumes from."""
    check_arguments(estimator, groups, run_size, repeats, seed)
    check_out(out, data=data)
    texts = read_texts(data)
    procs = Processes(device)
    try:
        console = Console(verbosity if procs.main else "quiet", cfg.logging.progress)
        engine, tok = build(cfg, device, procs, console)
        examples, long = tokenize(texts, tok, cfg.inner_sft.max_length, truncate, console)
        return score_texts(cfg, texts, examples, long, engine, estimator, groups, run_size, repeats, seed, out,
                           console, procs)
    finally:
        procs.close()


def score_texts(cfg: DPGConfig, texts: Texts, examples: list[list[int]], long: set[int], engine, estimator: str,
                groups: int | None, run_size: int | None, repeats: int, seed: int, out: str | Path | None,
                console: Console, procs: Processes) -> Attribution:
    """`attribute` once the examples are tokenized (`long`: those cut to max_length) and the engine is built."""
    copies = duplicates(examples)
    if any(d is not None for d in copies):
        console.warn(f"{texts.path}: {_plural(sum(d is not None for d in copies), 'duplicate')} (the same target "
                     "tokens as an earlier example); each copy is scored as an example of its own, as its multiplicity "
                     "says")
    size = run_size or default_run_size(cfg)
    runs = math.ceil(len(examples) / size)
    console.info(f"dpg attribute: {len(examples)} examples of {texts.path}, estimator {estimator}"
                 + (f" ({groups} groups per run)" if groups else "") + f", {runs} SFT run{'s' * (runs > 1)} of at most "
                 f"{size} examples × {repeats} repeat{'s' * (repeats > 1)}; inner SFT: {cfg.inner_sft.optimizer}, "
                 f"lr {cfg.inner_sft.lr:g}, {cfg.inner_sft.examples_per_step} examples per step")
    partial = None
    if out is not None:
        partial = Partial(Path(str(out) + ".partial"), fingerprint(cfg, examples, estimator, groups, size, seed),
                          procs)
    result = score_examples(engine, examples, estimator, size, repeats, seed, groups, partial, console)
    attribution = Attribution(str(texts.path), estimator, groups, size, seed, result, texts.texts,
                              [len(e) for e in examples], [i in long for i in range(len(examples))], copies)
    if out is not None and procs.main:
        paths = attribution.write(out)
        partial.remove()
        console.result(attribution.report())
        console.result(f"wrote {paths[0]} and {paths[1]}")
    return attribution

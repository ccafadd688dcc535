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
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dpg.run import checkpoints

from dpg.config import validation
from dpg.fields import build
from dpg.config.schema import DPGConfig, validate
from dpg.run.console import Console
from dpg.tools.check import CheckResult
from dpg.tools.evaluation import Estimate, Evaluation, SourceResult


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
    # Answered at once, before the model libraries load: where a new run goes, and whether a resumed one is finished.
    if not resume:
        validation.check_new_run(cfg.output_dir, overwrite)
    elif done := checkpoints.finished(cfg.output_dir, cfg.grpo.steps):
        print(done)
        return Path(cfg.output_dir)
    from dpg.run.console import quiet_libraries

    quiet_libraries(verbosity or cfg.logging.verbosity)  # before TRL is imported: some of its noise is printed then
    from dpg.training import trainer

    trainer.train(cfg, resume=resume, verbosity=verbosity, overwrite=overwrite)
    return Path(cfg.output_dir)


def generate(cfg: DPGConfig, n: int, out: str | Path, generator: str | Path | None = None,
             temperature: float | None = None, seed: int = 0, format: str = "jsonl",
             verbosity: str = "info") -> Path:
    """Sample n completions from `generator` (a directory such as RUN/final; default the config's generator) and
    write them to `out`: a JSONL file ({"prompt", "completion"} per line), or with format="hf" a `datasets` dataset
    directory (load it with datasets.load_from_disk). Returns `out`."""
    cfg = checked(cfg)
    if format not in ("jsonl", "hf"):
        raise ValueError(f"format: expected 'jsonl' or 'hf', got {format!r}")
    from dpg.run import console
    from dpg.training import assembly, sampling

    console.quiet_libraries(verbosity)
    model, tok = _generator(cfg, generator, Console(verbosity, cfg.logging.progress))
    rows = sampling.sample(model, tok, assembly.load_prompts(cfg), n, cfg.grpo.max_completion_length,
                           cfg.grpo.temperature if temperature is None else temperature, seed,
                           progress=_bars(verbosity))
    return sampling.write_hf(rows, out) if format == "hf" else sampling.write_jsonl(rows, out)


def evaluate(cfg: DPGConfig, generators: Sequence[str | Path] = (), data: Sequence[str | Path] = (), n: int = 64,
             repeats: int = 1, seed: int = 0, verbosity: str = "info") -> Evaluation:
    """The end-to-end test of generated data: a fresh SFT of the target on each source, then Φ and the proxies.

    generators: "initial" (the config's generator) or generator directories (RUN/final, RUN/checkpoint-N), each
    sampled for n completions per repeat; data: JSONL files or dataset directories from `generate`. Repeat r samples
    with seed + r and shuffles the inner SFT with inner_sft.seed + r, the same for every source, so differences are
    paired. Returns an Evaluation: print it for the table, .difference(a, b), .to_dict() for JSON."""
    cfg = checked(cfg)
    if not generators and not data:
        raise ValueError("evaluate: give generators (e.g. ['initial', 'runs/x/final']) and/or data files")
    for key, value in (("n", n), ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}: must be an integer ≥ 1, got {value!r}")
    names = [str(x) for x in (*generators, *data)]
    if len(set(names)) < len(names):
        raise ValueError(f"evaluate: a source is named twice in {names}")
    console = Console(verbosity, cfg.logging.progress)
    from dpg.training import assembly, sampling
    from dpg.run.console import number, quiet_libraries
    from dpg.engine.metagrad import MetagradEngine
    from dpg.training.rewards import to_target_examples

    quiet_libraries(verbosity)
    count = len(names) * repeats
    sampled = f", on {n} completions sampled per generator and repeat" if generators else ""
    console.info(f"dpg evaluate: {count} fresh SFT run{'s' if count > 1 else ''} of the target (sources × repeats: "
                 f"{len(names)} × {repeats}){sampled}")
    # Sources first (generators sampled one at a time, then freed), so a bad path fails before any SFT runs.
    texts: dict[str, list[list[str]]] = {}  # source -> completions of each repeat
    for path in data:
        texts[str(path)] = [sampling.read_completions(path)] * repeats
    prompts = assembly.load_prompts(cfg) if generators else []
    for gen in generators:
        model, tok = _generator(cfg, None if str(gen) == "initial" else gen, console)
        texts[str(gen)] = [[row["completion"] for row in sampling.sample(
            model, tok, prompts, n, cfg.grpo.max_completion_length, cfg.grpo.temperature, seed + r,
            progress=_bars(verbosity))] for r in range(repeats)]
        del model
    engine, _, target_tok = assembly.build_engine(cfg, console=console)
    runs: dict[str, list] = {name: [] for name in names}  # (result, examples, truncated) per repeat
    start = time.perf_counter()
    with console.progress(count, description="fresh SFT runs"):
        for r in range(repeats):
            inner = dataclasses.replace(cfg.inner_sft, seed=cfg.inner_sft.seed + r)
            eng = engine if r == 0 else MetagradEngine(engine.model, engine.objective, inner)
            for name in names:
                examples, truncated = to_target_examples(texts[name][r], target_tok, cfg.inner_sft.max_length)
                res = eng.evaluate(examples)
                runs[name].append((res, len(examples), truncated))
                console.debug(f"repeat {r + 1}/{repeats} {name}: Φ = {res.value:.6g} {res.proxies}")
                console.advance()
            if repeats > 1:  # a line per repeat, so a log file shows the progress too
                left = (time.perf_counter() - start) / (r + 1) * (repeats - r - 1)  # the repeats cost alike
                console.info(f"repeat {r + 1}/{repeats}: Φ " + ", ".join(f"{name} {number(runs[name][-1][0].value)}"
                                                                        for name in names)
                             + (f"; about {left:.0f} s left" if r + 1 < repeats else ""))
    generator_names = {str(g) for g in generators}
    sources = [SourceResult(name, "generator" if name in generator_names else "data",
                            Estimate([res.value for res, _, _ in runs[name]]),
                            {k: Estimate([res.proxies[k] for res, _, _ in runs[name]]) for k in runs[name][0][0].proxies},
                            [e for _, e, _ in runs[name]], [t for _, _, t in runs[name]], runs[name][0][0].num_steps)
               for name in names]
    return Evaluation(sources, repeats, n, seed)


def _bars(verbosity: str) -> bool:
    """Sampling progress bars: on a terminal only (in a log file each update would be a line)."""
    return verbosity != "quiet" and sys.stderr.isatty()


def _generator(cfg: DPGConfig, path: str | Path | None, console: Console | None = None):
    """(model, tokenizer): the config's generator (path None; a first-run pretraining shows its progress on
    `console`) or one saved in a directory, checked whole first (dpg/run/checkpoints.py); errors name the directory."""
    from safetensors import SafetensorError

    from dpg.run import checkpoints

    from dpg.training import assembly, models

    if path is None:
        return assembly.load_generator(cfg, console)
    why = checkpoints.model_dir_problem(path)
    if why is not None:
        raise ValueError(f"--generator {path}: {why}")
    try:
        return models.load_model(str(path), role="generator"), models.load_tokenizer(str(path))
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:  # e.g. a torn file and no manifest
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"--generator {path}: cannot be loaded ({type(err).__name__}: {first})") from err


def plot(runs: str | Path | Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Training curves of a run, or of several overlaid, as a PNG (default RUN/curves.png); returns its path."""
    from dpg.run import plotting

    return plotting.plot([runs] if isinstance(runs, (str, Path)) else list(runs), out)


def check(cfg: DPGConfig, n: int = 0, weights: int = 5, h: float | None = None, tol: float = 1e-4) -> CheckResult:
    """The engine's metagradients against central finite differences on the configured target, objective and inner
    SFT (run in float64, on n lines of the shipped corpus; n=0: two inner steps' worth). `weights` example weights are
    perturbed by h (default 1e-4 for SGD, 1e-6 for AdamW). Returns a CheckResult: .weights (index, metagrad,
    finite_difference, relative_error each), .max_relative_error, .passed (≤ tol); print it for the table."""
    cfg = checked(cfg)
    from dpg.tools import check as finite_differences

    return finite_differences.check(cfg, n=n, weights=weights, h=h, tol=tol)


def attribute(cfg: DPGConfig, data: str | Path, estimator: str = "metagrad", groups: int | None = None,
              run_size: int | None = None, repeats: int = 4, seed: int = 0, out: str | Path | None = None,
              truncate: bool = True, device: str | None = None, verbosity: str = "info"):
    """Score every example of a dataset (JSONL, .jsonl.gz or a `datasets` directory; "text" or "completion" per row)
    by what it does to Φ: its reward under `estimator` (metagrad = dΦ/dwᵢ at w = 1; first_order, loo,
    leave_group_out with `groups`) inside SFT runs of `run_size` examples (default: one reward call's run), over
    `repeats` fresh random partitions and inner shuffles (seed + r, inner_sft.seed + r). `truncate=False` refuses
    examples over inner_sft.max_length. With `out`: the scores (one JSON row per example), a .summary.json beside
    them, and partial results a rerun resumes from. Returns an Attribution: .means, .ses, .rows(), .summary(),
    .report(). See docs/attribution.md."""
    cfg = checked(cfg)
    from dpg.tools import attribution

    return attribution.attribute(cfg, data, estimator=estimator, groups=groups, run_size=run_size, repeats=repeats,
                                 seed=seed, out=out, truncate=truncate, device=device, verbosity=verbosity)


def select(cfg: DPGConfig, data: str | Path, out: str | Path, keep: int | float | str | None = None,
           drop_bottom: int | float | str | None = None, significant: bool = False, scores=None,
           estimator: str = "metagrad", groups: int | None = None, run_size: int | None = None, repeats: int = 4,
           seed: int = 0, truncate: bool = True, device: str | None = None, verbosity: str = "info"):
    """Keep the best examples of `data` and write them to `out` in the input's format (JSONL lines as written, or a
    `datasets` directory): the top `keep` (a count, or a fraction such as 0.25) by mean score, or all but the bottom
    `drop_bottom`; `significant` keeps only scores above 2 standard errors. `scores`: a file from `attribute` or an
    Attribution; without it they are computed (the other arguments as in `attribute`) and saved beside `out`.
    Reports Φ after one SFT run on the selection against random subsets of its size (`repeats`, paired by shuffle
    seed) and writes it beside `out` (.select.json). Returns a Selection: .indices, .phi, .difference("random")."""
    cfg = checked(cfg)
    from dpg.tools import select as selection

    return selection.select(cfg, data, out, keep=keep, drop_bottom=drop_bottom, significant=significant,
                              scores=scores, estimator=estimator, groups=groups, run_size=run_size, repeats=repeats,
                              seed=seed, truncate=truncate, device=device, verbosity=verbosity)

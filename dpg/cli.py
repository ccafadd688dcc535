"""`dpg` command line: train, generate, evaluate, check, calibrate, attribute, select, plot."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import signal
import sys
import time
import warnings
from pathlib import Path

from dpg.errors import DPGWarning

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Model libraries (torch, transformers, TRL: seconds to import) are imported inside the commands, after the config
# has been read and validated, so a config error comes back at once.

# A config override as people type it: a (dotted) config key, '=', its value. A path that looks like one (a generator
# directory named `lr=1e-3`) is written with a directory in front: ./lr=1e-3.
OVERRIDE = re.compile(r"[A-Za-z_][\w.]*=")
CONFIG_HELP = "YAML config, e.g. configs/quickstart.yaml"
OVERRIDES_HELP = "key=value config overrides, anywhere after the config, e.g. grpo.steps=5 (they win over the file)"


def config_verb(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    """A verb that reads CONFIG [key=value …]; the overrides may also follow its flags (`_parse` gathers them)."""
    verb = sub.add_parser(name, **kwargs)
    verb.add_argument("config", help=CONFIG_HELP)
    verb.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    return verb


def main(argv: list[str] | None = None) -> int:
    from dpg import __version__

    started = time.time()
    warnings.showwarning = _show_warning

    p = argparse.ArgumentParser(prog="dpg", description="Dataset Policy Gradient: train synthetic-data generators.",
                                epilog="`dpg COMMAND --help` lists a command's flags.")
    p.add_argument("--version", action="version", version=f"dpg {__version__}")
    sub = p.add_subparsers(dest="command", required=True, title="commands")

    t = sub.add_parser("train", help="train a generator with DPG, or --resume a run",
                       description="Train a generator with DPG; --resume continues a run from its newest whole "
                                   "checkpoint.")
    t.add_argument("config", nargs="?", help=f"{CONFIG_HELP} (omit with --resume)")
    t.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its newest whole checkpoint "
                   "(from step 0 if it has none; a finished run is left as it is)")
    t.add_argument("--overwrite", action="store_true", help="delete the run already in output_dir and start again")
    t.add_argument("--dry-run", action="store_true",
                   help="validate the config, build the models and the trainer, print a summary, then stop")
    t.add_argument("--stand-in", nargs="?", const="missing", metavar="{missing,always}", default=None,
                   help="with --dry-run: replace hub models that are not available offline (missing, the default) or "
                        "all non-tiny models (always) by tiny models of the same architecture family")

    g = config_verb(sub, "generate", help="sample a dataset from a generator",
                       description="Sample a dataset (prompt, completion) from a generator: JSONL or a `datasets` "
                                   "directory.")
    g.add_argument("--generator", metavar="DIR", help="generator directory, e.g. runs/x/final (default: the config's "
                   "generator)")
    g.add_argument("-n", type=int, default=64, help="completions to sample (default 64)")
    g.add_argument("--out", required=True, help="JSONL file to write (--format hf: a new dataset directory)")
    g.add_argument("--format", choices=["jsonl", "hf"], default="jsonl",
                   help="jsonl: one {prompt, completion} per line; hf: a `datasets` directory (load_from_disk)")
    g.add_argument("--temperature", type=float, default=None, help="> 0 samples; 0 = greedy (default: grpo.temperature)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")

    e = config_verb(sub, "evaluate", help="fresh SFT of the target on data, then Φ and proxies",
                       description="Fine-tune a fresh target on each source (a generator's samples, or a dataset), "
                                   "then report Φ and the proxies; with --repeats, mean ± standard error and paired "
                                   "differences.")
    e.add_argument("--data", nargs="+", metavar="DATA", help="datasets to evaluate (from `dpg generate`: JSONL "
                   "files or --format hf directories)")
    e.add_argument("--generator", nargs="+", metavar="DIR", help="generators to sample from and evaluate ('initial' "
                   "= the config's); the first generator (else the first --data) is the baseline of the paired differences")
    e.add_argument("-n", type=int, default=64, help="examples sampled per generator and repeat (default 64)")
    e.add_argument("--repeats", type=int, default=1, help="R repeats with fresh samples (seed + r) and SFT shuffles "
                   "(inner_sft.seed + r): mean ± standard error, paired differences")
    e.add_argument("--seed", type=int, default=0, help="sampling seed of repeat 0; repeat r uses seed + r (default 0)")
    e.add_argument("--out", help="write the results (every repeat, means, standard errors, differences) as JSON here")

    c = config_verb(sub, "check", help="finite-difference check of the exact metagradients",
                       description="Finite-difference check of the engine's metagradients on the configured target "
                                   "and objective (float64).")
    c.add_argument("-n", type=int, default=0, help="examples (default: two inner steps' worth)")
    c.add_argument("--weights", type=int, default=5, help="how many example weights to perturb (default 5)")
    c.add_argument("--h", type=float, default=None, help="FD step (default 1e-4 for SGD, 1e-6 for AdamW)")
    c.add_argument("--tol", type=float, default=1e-4, help="exit 1 if the max relative error exceeds this (default 1e-4)")

    cal = config_verb(sub, "calibrate", help="pick a reward estimator: agreement with leave-one-out",
                         description="Before a long run: how well each reward estimator agrees with exact "
                                     "leave-one-out on batches from the configured generator, and which one to use.")
    cal.add_argument("--batches", type=int, default=4, help="generation batches of the configured size to measure (default 4)")
    cal.add_argument("--threshold", type=float, default=0.5,
                     help="the least gradient cosine with loo an estimator must reach to be recommended; below "
                          "it, loo itself is (default 0.5)")
    cal.add_argument("--seed", type=int, default=0, help="seed of the batches' prompts and samples (default 0)")
    cal.add_argument("--out", help="write the table as JSON here")

    pl = sub.add_parser("plot", help="curves from one run's log.jsonl, or several overlaid",
                        description="Curves from the log.jsonl of one run, or of several overlaid.")
    pl.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directory of `dpg train` (holds log.jsonl)")
    pl.add_argument("--out", help="PNG path (default RUN_DIR/curves.png; several runs: compare.png in their common "
                    "parent directory)")

    at = config_verb(sub, "attribute", help="score every example of a dataset by what it does to Φ",
                        description="Score every example of a dataset by its reward in SFT runs of the configured "
                                    "inner SFT (metagrad: dΦ/dwᵢ at w = 1), repeated over random partitions into runs: "
                                    "mean ± standard error per example (docs/attribution.md).")
    at.add_argument("--data", nargs=1, required=True, metavar="FILE", help="JSONL (.jsonl.gz) or `datasets` "
                    "directory, a 'text' or a 'completion' per row (what dpg generate writes)")
    at.add_argument("--out", required=True, help="scores, one JSON row per example (a .summary.json is written "
                    "beside it; rerunning resumes from OUT.partial)")
    _attribution_flags(at)

    se = config_verb(sub, "select", help="keep a dataset's top examples by score, and Φ on them",
                        description="Keep the top examples by score, write them in the input's format, and report Φ "
                                    "after one SFT run on them against random subsets of the same size.")
    se.add_argument("--data", nargs=1, required=True, metavar="FILE", help="the dataset to select from (as attribute)")
    se.add_argument("--out", required=True, help="the selection, in the input's format (JSONL, gzip if it ends in "
                    ".gz, or a new `datasets` directory); the report goes beside it (.select.json)")
    se.add_argument("--scores", metavar="SCORES", help="scores from `dpg attribute` for --data (default: computed "
                    "with the flags below and saved beside --out as .scores.jsonl)")
    se.add_argument("--keep", metavar="K|FRACTION", help="keep the top K (or that fraction) by mean score")
    se.add_argument("--drop-bottom", metavar="K|FRACTION", help="keep all but the bottom K (or that fraction)")
    se.add_argument("--significant", action="store_true", help="keep only examples whose score exceeds 2 s.e.")
    _attribution_flags(se)

    for verb in sub.choices.values():  # every command, including any added above
        verb.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const="quiet",
                          help="print warnings, errors and results only (train: logging.verbosity=quiet)")
        verb.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const="debug",
                          help="also print TRL's metrics and the libraries' own warnings (logging.verbosity=debug)")

    typed = sys.argv[1:] if argv is None else list(argv)
    args = _parse(p, sub, typed)
    from dpg.config.schema import ConfigError
    from dpg.errors import RewardError

    try:
        _check_flags(args)
        return {"train": _train, "generate": _generate, "evaluate": _evaluate, "check": _check,
                "calibrate": _calibrate, "plot": _plot, "attribute": _attribute, "select": _select}[args.command](args)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"dpg {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a filesystem fault (read-only, disk full, ...): the cause and the path (dpg/run/fsio.py)
        from dpg.run.fsio import describe

        print(f"dpg {args.command}: error: {describe(err)}", file=sys.stderr)
        return 1
    except (RewardError, FloatingPointError) as err:  # a failed reward, or a NaN/inf stopped before it was saved
        print(f"dpg {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C, in any command: one line saying where it stopped, exit 130 (128 + SIGINT)
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C cannot cut that line short
        try:
            print(f"dpg {args.command}: {_interrupted(args, typed, started)}", file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, previous)
        return 130


def _parse(p: argparse.ArgumentParser, sub, typed: list[str]) -> argparse.Namespace:
    """argparse, with every key=value typed after the config gathered into args.overrides in the order typed:
    argparse leaves one typed after a flag unparsed, and a flag taking a variable number of values (--generator,
    --data, --stand-in, train's optional CONFIG) would take it as its own value."""
    args, rest = p.parse_known_args(typed)
    verb = sub.choices[args.command]
    if hasattr(args, "overrides"):
        found = [*args.overrides, *filter(_is_override, rest)]
        rest = [s for s in rest if not _is_override(s)]
        for action in verb._actions:
            value = getattr(args, action.dest, None)
            if action.dest == "overrides" or action.nargs not in ("?", "*", "+"):
                continue
            if isinstance(value, list):
                found += filter(_is_override, value)
                setattr(args, action.dest, [v for v in value if not _is_override(v)])
            elif _is_override(value):
                found.append(value)
                setattr(args, action.dest, action.const)
        args.overrides = sorted(found, key=lambda s: typed.index(s) if s in typed else len(typed))  # --flag=k=v: last
    if rest:  # the command's own usage, not the top-level one
        verb.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """dpg's own warnings as one line, `warning: …`; the libraries' keep Python's format (file, line, source)."""
    text = (f"warning: {message}\n" if issubclass(category, DPGWarning)
            else warnings.formatwarning(message, category, filename, lineno, line))
    (file or sys.stderr).write(text)


def _is_override(value) -> bool:
    return isinstance(value, str) and OVERRIDE.match(value) is not None


def _interrupted(args, typed: list[str], started: float) -> str:
    """What a Ctrl-C prints after `dpg COMMAND: `. It only reads: checkpoints are proved whole by their manifest,
    written last (dpg/run/checkpoints.py), so one cut short is skipped by --resume and nothing here needs repair."""
    if args.command == "train" and not args.dry_run:
        return _train_interrupted(args, typed, started)
    partial = Path(f"{args.out}.partial") if args.command == "attribute" else None
    if partial is not None and partial.is_file():
        return (f"interrupted; {partial} keeps the SFT runs already scored, and the same command resumes from it: "
                f"{shlex.join(['dpg', *typed])}")
    return "interrupted"


def _train_interrupted(args, typed: list[str], started: float) -> str:
    """Where the run stopped: its last logged step, its newest complete checkpoint, and the command that continues it."""
    from dpg.run import checkpoints

    again = f"run again: {shlex.join(['dpg', *typed])}"
    try:
        cfg = _train_config(args)
        out = Path(cfg.output_dir)
        config = out / checkpoints.CONFIG_FILE
        if not config.is_file() or config.stat().st_mtime < started:  # this command had not (re)written it yet
            return f"interrupted before the run {'continued' if args.resume else 'started'}; {again}"
        log = out / checkpoints.LOG_FILE
        rows = checkpoints.read_log(log) if log.is_file() else []
        # names and sizes against the manifest, not sha256: a Ctrl-C leaves a save unsigned, never a file altered,
        # and hashing gigabytes of weights would keep the prompt waiting
        whole = next(((step, path) for step, path in checkpoints.checkpoint_dirs(out)
                      if checkpoints.problem(path, hashes=False) is None), None)
    except (ValueError, OSError) as err:  # a config error is a ValueError; the run directory could not be read
        return f"interrupted ({err}); {again}"
    step = rows[-1]["step"] if rows else 0
    where = f"after step {step} of {cfg.grpo.steps}" if step else f"in step 1 of {cfg.grpo.steps}"
    saved = f"{whole[1]} (step {whole[0]})" if whole else "none yet (--resume starts again from step 0)"
    return (f"interrupted {where}; last complete checkpoint: {saved}; continue with: "
            f"dpg train --resume {shlex.quote(str(out))}")


def _check_flags(args) -> None:
    """Every flag's value and path, before anything loads; each error names the flag and the value."""
    from dpg.run.checkpoints import CONFIG_FILE
    from dpg.run.fsio import writable_dir_problem

    flags = vars(args)
    lowest = {"n": 0 if args.command == "check" else 1, "weights": 1, "seed": 0, "repeats": 1, "batches": 1}
    for name, low in lowest.items():
        value = flags.get(name)
        if value is not None and not low <= value < 2**63:
            raise ValueError(f"{'-n' if name == 'n' else '--' + name}: must be an integer from {low} up, got {value}")
    for name, low in (("temperature", 0), ("h", None), ("tol", None)):
        value = flags.get(name)
        if value is not None and not (math.isfinite(value) and (value >= low if low is not None else value > 0)):
            raise ValueError(f"--{name}: must be a finite number {'≥ 0' if low is not None else '> 0'}, got {value}")
    for path in flags.get("data") or []:  # a JSONL file, or a dataset directory (dpg generate --format hf)
        if not Path(path).is_file() and not Path(path).is_dir():
            raise ValueError(f"--data: {path} is {'not a file' if Path(path).exists() else 'missing'}")
    generators = flags.get("generator") or []
    for path in [generators] if isinstance(generators, str) else generators:
        if path != "initial" and not Path(path).is_dir():
            raise ValueError(f"--generator: {path} is not a directory (a generator saved by dpg train, or 'initial')")
    for run_dir in flags.get("run_dirs") or []:
        if not Path(run_dir).is_dir():
            raise ValueError(f"RUN_DIR: {run_dir} is {'not a directory' if Path(run_dir).exists() else 'missing'}")
    resume = flags.get("resume")
    if resume is not None and not Path(resume, CONFIG_FILE).is_file():
        why = ("does not exist" if not Path(resume).exists() else "is not a directory" if not Path(resume).is_dir()
               else f"holds no {CONFIG_FILE}, so it is not a run of dpg train")
        raise ValueError(f"--resume: the run directory {resume} {why}")
    if flags.get("stand_in") not in (None, "missing", "always"):
        raise ValueError(f"--stand-in: expected missing or always, got {flags['stand_in']}")
    out = flags.get("out")
    if out is not None and Path(out).is_dir():
        raise ValueError(f"--out: {out} is a directory; give a new {'directory' if flags.get('format') == 'hf' else 'file'} "
                         "name")
    if out is not None and (why := writable_dir_problem(Path(out).parent)) is not None:  # refused before any work
        raise ValueError(f"--out: cannot write {out}: {why}")


def _config(args):
    from dpg.config.schema import load_config

    return load_config(args.config, args.overrides)


def _train_config(args):
    """The run's config: CONFIG with the overrides, or with --resume the run directory's config.yaml with them."""
    from dpg.config.schema import load_config
    from dpg.run.checkpoints import CONFIG_FILE

    if args.resume:
        if args.config:
            raise ValueError("train --resume takes the run directory only; its config.yaml is used")
        # The run lives where it is now, even if it was moved or copied since its config was written.
        return load_config(Path(args.resume) / CONFIG_FILE, [*args.overrides, f"output_dir={args.resume}"])
    if not args.config:
        raise ValueError("train: give a CONFIG file (or --resume RUN_DIR)")
    return load_config(args.config, args.overrides)


def _train(args) -> int:
    from dpg import api

    cfg = _train_config(args)
    if args.stand_in and not args.dry_run:
        raise ValueError("train: --stand-in only goes with --dry-run (stand-in models are never trained)")
    if args.dry_run:
        from dpg.run.console import quiet_libraries

        quiet_libraries(args.verbosity or cfg.logging.verbosity)  # before dryrun imports TRL and loads the models
        from dpg.tools import dryrun
        from dpg.training import models

        try:
            print(dryrun.dry_run(cfg, stand_in=args.stand_in, config_path=args.config or args.resume))
        except models.ModelNotFoundError as err:
            raise models.ModelNotFoundError(f"{err} (add --stand-in to dry-run with tiny models of the same "
                                            "architecture family)") from err
        return 0
    if args.overwrite and args.resume:
        raise ValueError("train: --overwrite starts a run again and --resume continues it; give one of them")
    api.train(cfg, resume=bool(args.resume), verbosity=args.verbosity, overwrite=args.overwrite)
    return 0


def _generate(args) -> int:
    from dpg import api

    cfg = _config(args)
    out = api.generate(cfg, args.n, args.out, generator=args.generator, temperature=args.temperature, seed=args.seed,
                       format=args.format, verbosity=args.verbosity or "info")
    print(f"wrote {args.n} completions to {out}")
    return 0


def _evaluate(args) -> int:
    from dpg import api
    from dpg.run import fsio

    cfg = _config(args)
    if not args.data and not args.generator:
        raise ValueError("evaluate: give --data FILE... or --generator DIR...")
    result = api.evaluate(cfg, generators=args.generator or [], data=args.data or [], n=args.n, repeats=args.repeats,
                          seed=args.seed, verbosity=args.verbosity or "info")
    print(result)
    if args.out:
        fsio.write_text(args.out, json.dumps(result.to_dict(), indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def _check(args) -> int:
    from dpg import api

    result = api.check(_config(args), n=args.n, weights=args.weights, h=args.h, tol=args.tol)
    print(result)
    return 0 if result.passed else 1


def _calibrate(args) -> int:
    if not 0 < args.threshold <= 1:
        raise ValueError(f"--threshold: must be in (0, 1], got {args.threshold}")
    cfg = _config(args)
    from dpg.run.console import Console, quiet_libraries

    quiet_libraries(args.verbosity or "info")  # before the models load
    from dpg.tools import calibrate

    result = calibrate.calibrate(cfg, batches=args.batches, threshold=args.threshold, seed=args.seed,
                                 console=Console(args.verbosity or "info", cfg.logging.progress))
    print(result.table())
    print(result.recommendation)
    if args.out:
        print(f"wrote {calibrate.write(result, args.out)}")
    return 0


def _attribution_flags(parser) -> None:
    """How `attribute` scores, and how `select` scores when it is given no --scores."""
    parser.add_argument("--estimator", default="metagrad", help="metagrad (default), first_order, loo or "
                        "leave_group_out (with --groups G): reward.estimator's semantics")
    parser.add_argument("--groups", type=int, help="leave_group_out: random groups per SFT run")
    parser.add_argument("--run-size", type=int, help="examples per SFT run (default: one reward call's run, "
                        "grpo.prompts_per_step × num_generations)")
    parser.add_argument("--repeats", type=int, default=4, help="R fresh partitions and shuffles (seed + r, "
                        "inner_sft.seed + r): mean ± s.e. per example; select: also the Φ comparison (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="partition seed of repeat 0 (default 0)")
    parser.add_argument("--no-truncate", dest="truncate", action="store_false",
                        help="refuse examples over inner_sft.max_length target tokens instead of cutting them")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: where dpg train puts the target)")


def _attribute(args) -> int:
    from dpg import api

    api.attribute(_config(args), args.data[0], estimator=args.estimator, groups=args.groups, run_size=args.run_size,
                  repeats=args.repeats, seed=args.seed, out=args.out, truncate=args.truncate, device=args.device,
                  verbosity=args.verbosity or "info")
    return 0


def _select(args) -> int:
    from dpg import api

    api.select(_config(args), args.data[0], args.out, keep=args.keep, drop_bottom=args.drop_bottom,
               significant=args.significant, scores=args.scores, estimator=args.estimator, groups=args.groups,
               run_size=args.run_size, repeats=args.repeats, seed=args.seed, truncate=args.truncate,
               device=args.device, verbosity=args.verbosity or "info")
    return 0


def _plot(args) -> int:
    from dpg.run import plotting

    out = plotting.plot(args.run_dirs, args.out)
    print(f"wrote {out}")
    for run_dir in args.run_dirs:  # where each run started and ended: the numbers behind the picture
        rows = plotting.load_run(run_dir, warn=lambda torn: None).rows  # a torn line was named while plotting
        print(f"{run_dir}: Φ {rows[0]['phi']:.6g} (step {rows[0]['step']}) → {rows[-1]['phi']:.6g} "
              f"(step {rows[-1]['step']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

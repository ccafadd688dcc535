"""`dpg` command line: train, generate, evaluate, check, plot."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Model libraries (torch, transformers, TRL: seconds to import) are imported inside the commands, after the config
# has been read and validated, so a config error comes back at once.


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dpg", description="Dataset Policy Gradient: train synthetic-data generators.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a generator with DPG")
    t.add_argument("config", nargs="?", help="YAML config (omit with --resume)")
    t.add_argument("overrides", nargs="*", help="key=value, e.g. grpo.steps=5")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its newest whole checkpoint "
                   "(from step 0 if it has none; a finished run is left as it is)")
    t.add_argument("--overwrite", action="store_true", help="delete the run already in output_dir and start again")
    t.add_argument("--dry-run", action="store_true",
                   help="validate the config, build the models and the trainer, print a summary, then stop")
    t.add_argument("--stand-in", nargs="?", const="missing", choices=["missing", "always"], default=None,
                   help="with --dry-run: replace hub models that are not available offline (missing, the default) or "
                        "all non-tiny models (always) by tiny models of the same architecture family")

    g = sub.add_parser("generate", help="sample a dataset from a generator")
    g.add_argument("config")
    g.add_argument("overrides", nargs="*")
    g.add_argument("--generator", help="generator directory (default: the config's generator)")
    g.add_argument("-n", type=int, default=64)
    g.add_argument("--out", required=True, help="JSONL file to write (--format hf: a new dataset directory)")
    g.add_argument("--format", choices=["jsonl", "hf"], default="jsonl",
                   help="jsonl: one {prompt, completion} per line; hf: a `datasets` directory (load_from_disk)")
    g.add_argument("--temperature", type=float, default=None, help="> 0 samples; 0 = greedy (default: grpo.temperature)")
    g.add_argument("--seed", type=int, default=0)

    e = sub.add_parser("evaluate", help="fresh SFT of the target on sampled data, then Φ and proxies")
    e.add_argument("config")
    e.add_argument("overrides", nargs="*")
    e.add_argument("--data", nargs="+", metavar="DATA", help="datasets to evaluate (from `dpg generate`: JSONL "
                   "files or --format hf directories)")
    e.add_argument("--generator", nargs="+", metavar="DIR", help="generators to sample from and evaluate ('initial' "
                   "= the config's); the first generator (else the first --data) is the baseline of the paired differences")
    e.add_argument("-n", type=int, default=64, help="examples sampled per generator and repeat")
    e.add_argument("--repeats", type=int, default=1, help="R repeats with fresh samples (seed + r) and SFT shuffles "
                   "(inner_sft.seed + r): mean ± standard error, paired differences")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", help="write the results (every repeat, means, standard errors, differences) as JSON here")

    c = sub.add_parser("check", help="finite-difference check of the engine on the configured target and objective")
    c.add_argument("config")
    c.add_argument("overrides", nargs="*")
    c.add_argument("-n", type=int, default=0, help="examples (default: two inner steps' worth)")
    c.add_argument("--weights", type=int, default=5, help="how many example weights to perturb")
    c.add_argument("--h", type=float, default=None, help="FD step (default 1e-4 for SGD, 1e-6 for AdamW)")
    c.add_argument("--tol", type=float, default=1e-4, help="exit 1 if the max relative error exceeds this")

    cal = sub.add_parser("calibrate", help="before a long run: how well each reward estimator agrees with exact "
                         "leave-one-out on batches from the configured generator, and which one to use")
    cal.add_argument("config")
    cal.add_argument("overrides", nargs="*")
    cal.add_argument("--batches", type=int, default=4, help="generation batches of the configured size to measure")
    cal.add_argument("--threshold", type=float, default=0.5,
                     help="metagrad is recommended when its Spearman ρ and gradient cosine to loo reach this")
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--out", help="write the table as JSON here")

    pl = sub.add_parser("plot", help="curves from the log.jsonl of one run, or of several overlaid")
    pl.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    pl.add_argument("--out", help="PNG path (default RUN_DIR/curves.png; several runs: compare.png in their common "
                    "parent directory)")

    for verb in sub.choices.values():  # every command, including any added above
        verb.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const="quiet",
                          help="print warnings, errors and results only (train: logging.verbosity=quiet)")
        verb.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const="debug",
                          help="also print TRL's metrics and the libraries' own warnings (logging.verbosity=debug)")

    args = p.parse_args(argv)
    from dpg.config.schema import ConfigError
    from dpg.errors import RewardError

    try:
        _check_flags(args)
        return {"train": _train, "generate": _generate, "evaluate": _evaluate, "check": _check,
                "calibrate": _calibrate, "plot": _plot}[args.command](args)
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


def _check_flags(args) -> None:
    """Every flag's value and path, before anything loads; each error names the flag and the value."""
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
    out = flags.get("out")
    if out is not None and Path(out).is_dir():
        raise ValueError(f"--out: {out} is a directory; give a new {'directory' if flags.get('format') == 'hf' else 'file'} "
                         "name")
    if out is not None and (why := writable_dir_problem(Path(out).parent)) is not None:  # refused before any work
        raise ValueError(f"--out: cannot write {out}: {why}")


def _config(args):
    from dpg.config.schema import load_config

    return load_config(args.config, args.overrides)


def _train(args) -> int:
    from dpg import api
    from dpg.config.schema import load_config
    from dpg.run.checkpoints import CONFIG_FILE

    if args.resume:
        if args.config and "=" in args.config:  # `dpg train --resume DIR key=value`: argparse took it as config
            args.overrides.insert(0, args.config)
        elif args.config:
            raise ValueError("train --resume takes the run directory only; its config.yaml is used")
        # The run lives where it is now, even if it was moved or copied since its config was written.
        cfg = load_config(Path(args.resume) / CONFIG_FILE, [*args.overrides, f"output_dir={args.resume}"])
    else:
        if not args.config:
            raise ValueError("train: give a CONFIG file (or --resume RUN_DIR)")
        cfg = load_config(args.config, args.overrides)
    if args.stand_in and not args.dry_run:
        raise ValueError("train: --stand-in only goes with --dry-run (stand-in models are never trained)")
    if args.dry_run:
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
    from dpg.tools import calibrate

    result = calibrate.calibrate(cfg, batches=args.batches, threshold=args.threshold, seed=args.seed)
    print(result.table())
    print(result.recommendation)
    if args.out:
        print(f"wrote {calibrate.write(result, args.out)}")
    return 0


def _plot(args) -> int:
    from dpg.run import plotting

    out = plotting.plot(args.run_dirs, args.out)
    print(f"wrote {out}")
    for run_dir in args.run_dirs:  # where each run started and ended: the numbers behind the picture
        rows = plotting.load_run(run_dir).rows
        print(f"{run_dir}: Φ {rows[0]['phi']:.6g} (step {rows[0]['step']}) → {rows[-1]['phi']:.6g} "
              f"(step {rows[-1]['step']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

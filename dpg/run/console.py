"""What dpg prints while it trains: one compact line per GRPO step above a progress bar, warnings, a summary.

    step  12/150  Φ -5.8123  loss 5.8123  reward std 3.1e-03 (eps 3.1e-06)  distinct-2 0.62  len 17.2  0.64 s/step

`verbosity` (logging.verbosity, `-q` / `-v` on the command line): `quiet` prints warnings, errors and the final
summary only; `info` (default) adds the step lines and, on a terminal, a progress bar; `debug` adds TRL's whole
metrics dict per step and lets the libraries' own warnings and progress bars through. TRL's dict always goes to
log.jsonl (`trl`) and to wandb. Torch-free: the CLI prints with it before any model library is imported.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import sys
import warnings

VERBOSITIES = ("quiet", "info", "debug")


def step_line(record: dict, total: int) -> str:
    """The console line of one log.jsonl record (see the module docstring)."""
    width = len(str(total))
    head = f"step {record['step']:>{width}}/{total}"
    if "reward_failed" in record:
        return f"{head}  reward failed, policy update skipped: {record['reward_failed']}"
    parts = [head, f"Φ {number(record['phi'])}"]
    if record["proxies"]:  # the objective's first proxy is its main readable number
        name, value = next(iter(record["proxies"].items()))
        parts.append(f"{name} {number(value)}")
    scale = record["advantage_scaling"]
    parts.append(f"reward std {scale['raw_std']:.1e} (eps {scale['eps_floor']:.1e})")
    text = record.get("text")
    if text:
        d2 = text["distinct_2"]
        parts.append(f"distinct-2 {'–' if d2 is None else f'{d2:.2f}'}")
        parts.append(f"len {text['mean_words']:.1f}")
    parts.append(f"{record['seconds']['total']:.2f} s/step")
    return "  ".join(parts)


def number(value: float) -> str:
    """Φ (and the main proxy) as dpg prints it: four decimals, so successive lines align and compare digit by digit
    (l2_norm's Φ moves by ~0.002 around −32, which four significant digits would print as −32 every step); in
    scientific notation where four decimals would hide the value (|x| < 1e-3) or outgrow the line (|x| ≥ 1e5)."""
    if value != 0 and math.isfinite(value) and not 1e-3 <= abs(value) < 1e5:
        return f"{value:.3e}"
    return f"{value:.4f}"


class Console:
    """Prints at a verbosity: `info` / `debug` lines to stdout, warnings to stderr (always), and a progress bar on a
    terminal (rich) that the lines scroll above."""

    def __init__(self, verbosity: str = "info", progress: bool = True):
        if verbosity not in VERBOSITIES:
            raise ValueError(f"logging.verbosity: invalid value {verbosity!r}; choose one of {list(VERBOSITIES)}")
        self.verbosity, self.show_bar = verbosity, progress and verbosity != "quiet"
        self._bar = None
        self._print = None  # while a bar is live: prints above it, unwrapped (rich would break a long line)

    def info(self, message: str) -> None:
        if self.verbosity != "quiet":
            self._out(message)

    def debug(self, message: str) -> None:
        if self.verbosity == "debug":
            self._out(message)

    def _out(self, message: str) -> None:
        if self._print is not None:
            self._print(message)
        else:
            print(message, flush=True)

    def result(self, message: str) -> None:
        """What a command produced (a summary, a path): printed at every verbosity."""
        print(message, flush=True)

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def progress(self, total: int, completed: int = 0, description: str = "GRPO steps"):
        """A progress bar for the duration of the block (only on a terminal: in a log file it would be noise)."""
        if not (self.show_bar and sys.stdout.isatty()):
            yield
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("eta"), TimeRemainingColumn(), transient=True) as bar:
            task = bar.add_task(description, total=total, completed=completed)
            self._bar = lambda: bar.advance(task)
            self._print = lambda m: bar.console.print(m, markup=False, highlight=False, soft_wrap=True)
            try:
                yield
            finally:
                self._bar = self._print = None

    def advance(self) -> None:
        if self._bar is not None:
            self._bar()


# -- the libraries' known-harmless noise, dropped where it is raised --------------------------------------------

# transformers 5 deprecates the gradient_checkpointing names that TRL (pinned) still calls; nothing for a user to do.
_DEPRECATED = r"`\w*gradient_checkpointing\w*` is deprecated and will be removed in v6"
# dpg's tiny models have no loss_type in their config; transformers falls back to the causal-LM loss, as intended.
_LOSS_TYPE = re.compile(r"`loss_type=None` was set in the config but it is unrecognized")


class _DropMatching(logging.Filter):
    def __init__(self, pattern: re.Pattern):
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


_LOSS_TYPE_FILTER = _DropMatching(_LOSS_TYPE)


def quiet_libraries(verbosity: str) -> None:
    """Drop the known-harmless warnings and progress bars of transformers, TRL and datasets (all shown at `debug`).
    Imports transformers: called on the model side only, before the modules that build models and trainers are
    imported (some of the noise is printed at import)."""
    if verbosity == "debug":
        return
    warnings.filterwarnings("ignore", message=_DEPRECATED, category=FutureWarning)
    logging.getLogger("transformers.modeling_utils").addFilter(_LOSS_TYPE_FILTER)  # addFilter ignores a repeat
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights", "Writing model shards": one bar per load/save
    datasets.disable_progress_bars()  # "Saving the dataset", "Map": one bar per dataset operation
    # transformers' integrations module prints "[INFO] Running in WANDB offline mode" (a bare print, no log record)
    # when it is first imported with WANDB_MODE=offline set: imported here with stdout muted, it stays silent when
    # TRL's trainer imports it later. wandb still runs offline.
    with contextlib.redirect_stdout(io.StringIO()):
        import transformers.integrations.integration_utils  # noqa: F401

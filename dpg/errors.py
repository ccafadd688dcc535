"""dpg's own errors, torch-free so the CLI catches them (one line) without loading the model libraries: bad input is
`ConfigError` (exit 2; raised by dpg.config.schema and dpg.config.validation, which both import it from here); a training run that
stops partway raises `RewardError` or `NonFiniteError` (exit 1); filesystem faults are `dpg.run.fsio.FilesystemError`."""


class ConfigError(ValueError):
    """A config key or a command-line value is invalid; the message names the key (dotted) or flag and the value."""


class RewardError(RuntimeError):
    """A GRPO step's rewards could not be computed (reward.on_error: raise); the message names the step and cause."""


class NonFiniteError(FloatingPointError):
    """A NaN or inf in the policy loss or the generator's weights; the message names the step and the tensor."""


class DPGWarning(UserWarning):
    """A result dpg computes but does not trust (e.g. bfloat16 AdamW metagradients); the CLI prints it as one line."""

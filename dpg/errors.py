"""The errors that stop a training run partway, torch-free so the CLI catches them (one line, exit 1) without loading
the model libraries. Bad input is `dpg.config.ConfigError` (exit 2); filesystem faults are `dpg.fsio.FilesystemError`."""


class RewardError(RuntimeError):
    """A GRPO step's rewards could not be computed (reward.on_error: raise); the message names the step and cause."""


class NonFiniteError(FloatingPointError):
    """A NaN or inf in the policy loss or the generator's weights; the message names the step and the tensor."""

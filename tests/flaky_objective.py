"""An objective that fails on purpose, for the failure-policy tests (imported as `flaky_objective:...`)."""

import torch


def always_nan(model, params):
    return params["lm_head.weight"].sum() * torch.nan

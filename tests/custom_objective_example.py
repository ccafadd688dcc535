"""Custom objectives imported by name in tests: "custom_objective_example:make_objective" and ":mean_head"."""

import torch


def mean_head(model, params):
    """Used as the objective itself: it takes (model, params). Φ = mean of the LM head weight."""
    return params["lm_head.weight"].mean()


def make_objective(weight="lm_head.weight", scale=1.0):
    """A factory: called with the config's parameters, returns the objective. Φ = −scale · Σ W²."""
    def objective(model, params):
        return -scale * torch.sum(params[weight] ** 2)
    return objective

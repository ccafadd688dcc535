"""Objectives Φ(model, params) -> scalar tensor, higher is better: what the generated data should do to the target.

`model` is the target with its initial weights (never modified); `params` maps its parameter names to the fine-tuned
tensors. An objective must be differentiable in `params` with torch.func, and may have `proxies(model, params)`
returning readable floats. See docs/objectives.md.

    objective = objectives.get("weight_pattern", pattern="qr", text="hello")
    objective = objectives.from_config({"name": "l2_norm"})
    objective = objectives.get("my_package.my_module:make_objective", scale=2.0)   # your own, imported by name
    objective = objectives.get("path/to/my_objective.py:MyObjective")             # or from a file
    objectives.check_config({"name": "l2_norm", "weight": "lm_head.weight"})     # name and parameters, no model

'module.path:callable' is looked up on sys.path and then in the working directory (a console script such as `dpg`
does not have it on sys.path, unlike `python -m`); 'path/to/file.py:callable' loads that file (relative to the
working directory).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from dpg.objectives.pictures import save_pattern_png
from dpg.objectives.text import TargetString, TextLoss
from dpg.objectives.weights import L2Norm, WeightPattern, load_pattern, qr_pattern

__all__ = ["get", "from_config", "check_config", "register", "names", "save_pattern_png", "load_pattern",
           "qr_pattern", "L2Norm", "WeightPattern", "TextLoss", "TargetString"]

# The built-ins: dpg.config.names.OBJECTIVES lists the same names, so the config layer knows them without torch.
_REGISTRY = {"l2_norm": L2Norm, "weight_pattern": WeightPattern, "text_loss": TextLoss, "target_string": TargetString}


def register(name: str):
    """Decorator: make a factory (class or function returning an objective) available as `get(name, **params)`."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"name: expected a non-empty string without ':' (kept for 'module:callable'), got {name!r}")

    def deco(factory):
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"name: objective {name!r} is already registered to {_REGISTRY[name]!r}")
        _REGISTRY[name] = factory
        return factory
    return deco


def names() -> list[str]:
    return sorted(_REGISTRY)


def _is_objective_itself(obj) -> bool:
    # The rule: a callable (not a class) with exactly two required positional arguments is objective(model, params)
    # itself; anything else is a factory. Instances are judged by their __call__.
    if inspect.isclass(obj):
        return False
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    required = [p for p in sig.parameters.values()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return len(required) == 2 and all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in required)


def _import(spec: str, key: str):
    module_name, _, attr = spec.rpartition(":")  # the last colon: a Windows path has one of its own
    if not module_name or not attr:
        raise ValueError(f"{key}: {spec!r} should look like 'package.module:callable' or 'path/to/file.py:callable'")
    module = _load_file(module_name, spec, key) if module_name.endswith(".py") else _load_module(module_name, spec, key)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{key}: {module_name!r} has no attribute {attr!r}"
                             f"{_guess(part, [n for n in dir(obj) if not n.startswith('_')])} (objective {spec!r})")
        obj = getattr(obj, part)
    return obj


def _guess(word: str, choices) -> str:
    """': did you mean 'x'?' for the closest of `choices` (difflib), or nothing."""
    return "".join(f": did you mean {c!r}?" for c in difflib.get_close_matches(word, list(choices), n=1))


def _load_module(module_name: str, spec: str, key: str):
    # The working directory comes last, so a file there never shadows an installed package; it stays on sys.path
    # because the module may import its neighbours later.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{key}: cannot import module {module_name!r} for objective {spec!r} (looked on sys.path "
                         f"and in the working directory {os.getcwd()}): {e}") from e


def _load_file(filename: str, spec: str, key: str):
    path = Path(filename).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"{key}: no file {filename!r} for objective {spec!r} (relative to the working directory "
                         f"{os.getcwd()})")
    name = f"dpg_objective_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"  # one module per file
    if name not in sys.modules:
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # before running it: dataclasses and pickle look the module up by name
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[name]
            raise ValueError(f"{key}: loading {filename!r} for objective {spec!r} failed: "
                             f"{type(e).__name__}: {e}") from e
    return sys.modules[name]


def _build(obj, params: dict, label: str):
    _check_parameters(obj, params, label)
    objective = obj if _is_objective_itself(obj) else obj(**params)
    if not callable(objective):
        raise ValueError(f"objective {label}: the factory returned {type(objective).__name__}, "
                         "not a callable objective(model, params)")
    return objective


def _check_parameters(obj, params: dict, label: str) -> None:
    """The parameters against the factory's signature, before it is called (so a TypeError raised inside the factory
    is never mislabelled): a misspelt one is named with the closest accepted one, a missing one by its name."""
    if not callable(obj):
        raise ValueError(f"objective {label}: {obj!r} is not callable")
    if _is_objective_itself(obj):
        if params:
            raise ValueError(f"objective.{sorted(params)[0]}: objective {label} is objective(model, params) itself "
                             f"and takes no parameters, got {sorted(params)}")
        return
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return  # a builtin without a signature: calling it will say what is wrong
    accepted = [p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        for key in params:
            if key not in accepted:
                raise ValueError(f"objective.{key}: objective {label} has no parameter {key!r}{_guess(key, accepted)}"
                                 f" (accepted: {accepted})")
    for p in sig.parameters.values():
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in params:
            raise ValueError(f"objective.{p.name}: objective {label} needs this parameter (accepted: {accepted})")
    try:
        sig.bind(**params)
    except TypeError as e:  # e.g. a positional-only parameter
        raise ValueError(f"objective {label}: {e}; accepted parameters: {accepted}") from None


def _resolve(name, key: str = "name"):
    """The factory or objective that `name` stands for: a registered name, 'module.path:callable', a
    'path/to/file.py:callable', or an object. `key` names the setting in errors (objective.name in a config)."""
    if not isinstance(name, str):
        return name
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        return _import(name, key)
    # the same words as the config layer's check (dpg/config/validation.py), which sees the built-in names only
    raise ValueError(f"{key}: unknown objective {name!r}{_guess(name, names())} (known: {names()}, or "
                     "'package.module:callable' / 'path/to/file.py:callable' for your own)")


def _keywords(factory) -> set[str]:
    if _is_objective_itself(factory):
        return set()
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return set()
    return {p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def get(name, **params):
    """An objective from a registered name, 'module.path:callable', or a Python object (objective or factory)."""
    return _build(_resolve(name), params, repr(name))


def from_config(config: Mapping, **context):
    """An objective from a config mapping such as YAML's {name: weight_pattern, pattern: qr, text: hello}.

    `context` (e.g. model=target, tokenizer=target_tokenizer) is passed to a factory that names the parameter, unless
    the config sets it; a `tokenizer_path` in the config also replaces the context's tokenizer.
    """
    name, factory, params = _factory(config, context)
    return _build(factory, params, repr(name))


def check_config(config: Mapping, context=()) -> None:
    """What `from_config` checks before it builds anything: the name resolves (a module or file is imported) and
    the parameters fit the factory, the `context` names (e.g. "model", "tokenizer") counted as given where the
    factory takes them. `dpg` calls it before loading the target, so a misspelt parameter costs no model load."""
    name, factory, params = _factory(config, dict.fromkeys(context))
    _check_parameters(factory, params, repr(name))


def _factory(config: Mapping, context: dict):
    """(name, factory, parameters) of a config mapping, with the context objects the factory takes."""
    if not isinstance(config, Mapping) or "name" not in config:
        raise ValueError(f"objective config: expected a mapping with a 'name' key, got {config!r}")
    params = dict(config)
    name = params.pop("name")
    factory = _resolve(name, "objective.name")
    accepted = _keywords(factory)
    for key, value in context.items():
        replaced = key in params or (key == "tokenizer" and "tokenizer_path" in params)
        if key in accepted and not replaced:
            params[key] = value
    return name, factory, params

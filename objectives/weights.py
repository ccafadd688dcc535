"""Objectives on the fine-tuned weights themselves: `l2_norm` and `weight_pattern` (the paper's "67" and QR targets).

Both name a weight by its parameter name (as in `model.named_parameters()`); the default is the LM head, resolved
from `model.get_output_embeddings()` at each call, so one objective works for any target architecture.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# The paper's "67" picture (6×7, −1 = dark), from the reference README.
SIXSEVEN = np.array([
    [1, 1, 1, 1, -1, -1, -1],
    [-1, -1, -1, 1, 1, 1, -1],
    [-1, 1, 1, 1, 1, 1, -1],
    [-1, -1, -1, 1, 1, 1, -1],
    [-1, 1, -1, 1, 1, 1, -1],
    [-1, -1, -1, 1, 1, 1, 1],
], dtype=np.int8)

QR_LEVELS = ("L", "M", "Q", "H")
IMAGE_SUFFIXES = (".png", ".bmp", ".gif", ".jpg", ".jpeg")
LAYOUTS = ("hidden_by_vocab", "as_stored")


# ----------------------------------------------------------------------------------------------------------------------
# naming weights


def _param_name(model: torch.nn.Module, tensor: torch.Tensor) -> str | None:
    # Identity, not shape: a tied head is the very same Parameter as the input embedding, listed once under its name.
    for name, p in model.named_parameters():
        if p is tensor:
            return name
    return None


def _head_name(model: torch.nn.Module) -> str | None:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return _param_name(model, head.weight) if head is not None and getattr(head, "weight", None) is not None else None


def head_weight_name(model: torch.nn.Module) -> str:
    """Name of the LM head's weight in `model.named_parameters()` (for a tied head: the input embedding's name)."""
    name = _head_name(model)
    if name is None:
        raise ValueError(f"weight: cannot find the LM head of {type(model).__name__} (get_output_embeddings() gives "
                         "no parameter of the model); name the weight explicitly, e.g. weight='lm_head.weight'")
    return name


def is_tied_head(model: torch.nn.Module, name: str) -> bool:
    """True if parameter `name` is both the LM head and the input embedding (writing into one writes into both)."""
    inp = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return inp is not None and _param_name(model, inp.weight) == name == _head_name(model)


def resolve_weight(model: torch.nn.Module, weight: str | None) -> str:
    """The parameter name to use: `weight` checked against the model, or the LM head's name if `weight` is None."""
    if weight is None:
        return head_weight_name(model)
    names = [n for n, _ in model.named_parameters()]
    if weight not in names:
        try:  # a tied duplicate such as a tied 'lm_head.weight' is listed once, under its first name
            alias = _param_name(model, model.get_parameter(weight))
        except AttributeError:
            alias = None
        if alias is not None:
            return alias
        close = difflib.get_close_matches(weight, names, n=3)
        hint = f"; did you mean {close}?" if close else f"; the model has e.g. {names[:4]}"
        raise ValueError(f"weight: {weight!r} is not a parameter of {type(model).__name__}{hint}")
    return weight


def _param(params: dict, name: str) -> torch.Tensor:
    if name not in params:
        raise ValueError(f"params: no entry {name!r}; params must map every name of model.named_parameters() "
                         f"to its fine-tuned tensor (got {len(params)} entries)")
    return params[name]


# ----------------------------------------------------------------------------------------------------------------------
# l2_norm


class L2Norm:
    """Φ = −‖W‖_F of one weight (default: the LM head). Proxy: `norm`."""

    def __init__(self, weight: str | None = None, model: torch.nn.Module | None = None):
        if weight is not None and not isinstance(weight, str):
            raise ValueError(f"weight: expected a parameter name (str) or None, got {weight!r}")
        self.weight = weight
        if model is not None:
            resolve_weight(model, weight)  # fail at construction, not at the first reward call

    def __call__(self, model, params):
        return -torch.linalg.vector_norm(_param(params, resolve_weight(model, self.weight)))

    def proxies(self, model, params) -> dict[str, float]:
        with torch.no_grad():
            return {"norm": -float(self(model, params))}


# ----------------------------------------------------------------------------------------------------------------------
# patterns


def qr_pattern(text: str, error_correction: str = "M") -> np.ndarray:
    """Version-1 (21×21) QR code of `text` as a ±1 matrix, dark module → −1. `qrcode` picks the mask (deterministic)."""
    import qrcode  # only needed for pattern="qr"
    from qrcode.exceptions import DataOverflowError

    if not isinstance(text, str) or not text:
        raise ValueError(f"text: pattern='qr' needs a non-empty string to encode, got {text!r}")
    if error_correction not in QR_LEVELS:
        raise ValueError(f"error_correction: expected one of {QR_LEVELS}, got {error_correction!r}")
    level = getattr(qrcode.constants, f"ERROR_CORRECT_{error_correction}")
    qr = qrcode.QRCode(version=1, error_correction=level, border=0)
    qr.add_data(text)
    try:
        qr.make(fit=False)  # fit=False: never grow past version 1, fail instead
    except DataOverflowError:
        raise ValueError(f"text: {text!r} ({len(text.encode())} bytes) does not fit a version-1 (21×21) QR code at "
                         f"error correction {error_correction}; shorten it or lower error_correction") from None
    return np.where(np.array(qr.get_matrix(), dtype=bool), -1, 1).astype(np.int8)


def load_pattern(pattern="67", text: str | None = None, error_correction: str = "M") -> np.ndarray:
    """A ±1 picture [h, w] (−1 = dark) from a built-in name, a .npy / image file, or an array-like."""
    if text is not None and not (isinstance(pattern, str) and pattern == "qr"):
        raise ValueError("text: only used with pattern='qr'")
    if isinstance(pattern, str) and pattern == "qr":
        return qr_pattern(text, error_correction)
    if isinstance(pattern, str) and pattern == "67":
        arr = SIXSEVEN
    elif isinstance(pattern, (str, Path)):
        path = Path(pattern)
        if path.suffix.lower() not in (".npy", *IMAGE_SUFFIXES):
            raise ValueError(f"pattern: {str(pattern)!r} is neither a built-in ('67', 'qr') nor a .npy or image file "
                             f"({', '.join(IMAGE_SUFFIXES)})")
        if not path.is_file():
            raise ValueError(f"pattern: file {str(path)!r} does not exist")
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            from PIL import Image
            with Image.open(path) as img:
                gray = np.asarray(img.convert("L"), dtype=np.float64)  # transparency is ignored
            arr = np.where(gray < 127.5, -1, 1)  # dark → −1, threshold at mid-gray
    else:
        try:
            arr = np.asarray(pattern.detach().cpu() if isinstance(pattern, torch.Tensor) else pattern)
        except ValueError as e:  # ragged nested lists
            raise ValueError(f"pattern: not a rectangular array: {e}") from None
    if arr.dtype == bool or arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"pattern: expected a non-empty 2-D array of −1/+1, got dtype {arr.dtype} shape {arr.shape}")
    if not np.isin(arr, (-1, 1)).all():
        raise ValueError(f"pattern: values must be −1 (dark) or +1, found {np.unique(arr)[:10].tolist()}")
    return arr.astype(np.int8)


# ----------------------------------------------------------------------------------------------------------------------
# weight_pattern


class WeightPattern:
    """Write a ±1 picture S (h×w) into the signs of the change Δ of a weight patch.

    Φ = −mean softplus(−strength · S ⊙ Δ), Δ = W[patch] − W₀[patch], W₀ the model's own weight.

    layout "hidden_by_vocab" (default for the LM head) views an HF head [vocab, hidden] as the paper's [hidden, vocab]:
    S[a, b] pairs with W[col + b, row + a], i.e. rows of S are hidden dims, columns are token ids.
    layout "as_stored" (default for other weights): S[a, b] pairs with W[row + a, col + b].
    """

    def __init__(self, pattern="67", text: str | None = None, error_correction: str = "M", weight: str | None = None,
                 row: int = 0, col: int = 0, strength: float = 20.0, layout: str | None = None,
                 model: torch.nn.Module | None = None):
        self.target = load_pattern(pattern, text, error_correction)
        for key, val in (("row", row), ("col", col)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 0:
                raise ValueError(f"{key}: expected an integer ≥ 0, got {val!r}")
        number = isinstance(strength, (int, float)) and not isinstance(strength, bool)
        if not number or not math.isfinite(strength) or strength <= 0:
            raise ValueError(f"strength: expected a finite number > 0, got {strength!r}")
        if layout not in (None, *LAYOUTS):
            raise ValueError(f"layout: expected one of {LAYOUTS} (or None: by weight), got {layout!r}")
        if weight is not None and not isinstance(weight, str):
            raise ValueError(f"weight: expected a parameter name (str) or None, got {weight!r}")
        self.weight, self.row, self.col, self.strength, self.layout = weight, row, col, float(strength), layout
        if model is not None:
            self.resolve(model)  # fail at construction, not at the first reward call

    def resolve(self, model) -> tuple[str, str]:
        """(parameter name, layout) on `model`, after checking the weight exists, is untied and holds the patch."""
        name = resolve_weight(model, self.weight)
        if is_tied_head(model, name):
            raise ValueError(f"weight: {name!r} is the LM head tied to the input embeddings, so the picture would be "
                             "written into the input embeddings too; set `untie_lm_head: true` on the target")
        layout = self.layout or ("hidden_by_vocab" if name == _head_name(model) else "as_stored")
        shape = tuple(model.get_parameter(name).shape)
        if len(shape) != 2:
            raise ValueError(f"weight: {name!r} has shape {shape}; weight_pattern needs a 2-D weight")
        view = shape[::-1] if layout == "hidden_by_vocab" else shape
        h, w = self.target.shape
        if self.row + h > view[0] or self.col + w > view[1]:
            raise ValueError(f"row/col: the {h}×{w} pattern at row={self.row}, col={self.col} does not fit weight "
                             f"{name!r} of shape {shape} (seen as {view[0]}×{view[1]} in layout {layout!r})")
        return name, layout

    def delta(self, model, params) -> torch.Tensor:
        """Δ on the patch, [h, w], aligned with `self.target`."""
        name, layout = self.resolve(model)
        w, w0 = _param(params, name), model.get_parameter(name).detach()
        if layout == "hidden_by_vocab":
            w, w0 = w.T, w0.T
        h, wd = self.target.shape
        rows, cols = slice(self.row, self.row + h), slice(self.col, self.col + wd)
        return w[rows, cols] - w0[rows, cols].to(w.dtype)

    def pixel_losses(self, model, params) -> torch.Tensor:
        d = self.delta(model, params)
        s = torch.as_tensor(self.target, dtype=d.dtype, device=d.device)
        return F.softplus(-self.strength * s * d)

    def __call__(self, model, params):
        return -self.pixel_losses(model, params).mean()

    def maps(self, model, params) -> dict[str, np.ndarray]:
        """For pictures: target S, decoded sign(Δ) and per-pixel loss, each [h, w]."""
        with torch.no_grad():
            return {"target": self.target.astype(np.float64),
                    "decoded": torch.sign(self.delta(model, params)).cpu().double().numpy(),
                    "loss": self.pixel_losses(model, params).cpu().double().numpy()}

    def proxies(self, model, params) -> dict[str, float]:
        with torch.no_grad():
            d = self.delta(model, params)
            s = torch.as_tensor(self.target, dtype=d.dtype, device=d.device)
            # sign(0) = 0 matches neither −1 nor +1: an unchanged weight counts as wrong, so accuracy starts at 0.
            return {"pixel_accuracy": float((torch.sign(d) == s).double().mean()),
                    "pattern_loss": float(F.softplus(-self.strength * s * d).mean())}

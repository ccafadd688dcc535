"""Sampling datasets from a generator (for `dpg generate` and `dpg evaluate`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dpg.run import fsio


def sample(model, tokenizer, prompts: list, n: int, max_new_tokens: int, temperature: float = 1.0, seed: int = 0,
           batch_size: int = 16, progress: bool = True) -> list[dict]:
    """n completions, cycling through `prompts`; returns [{"prompt", "completion"}] (completion decoded, no specials)."""
    if n < 1:
        raise ValueError(f"n: must be at least 1, got {n}")
    torch.manual_seed(seed)
    tokenizer.padding_side = "left"  # decoder-only generation continues from the right end
    model.eval()
    rows = []
    chosen = [prompts[i % len(prompts)] for i in range(n)]
    for start in tqdm(range(0, n, batch_size), desc="sampling", disable=not progress):
        batch = chosen[start:start + batch_size]
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if isinstance(p, list)
                 else p for p in batch]
        enc = tokenizer(texts, return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        for p, ids in zip(batch, out[:, enc["input_ids"].shape[1]:]):
            rows.append({"prompt": p, "completion": tokenizer.decode(ids, skip_special_tokens=True)})
    return rows


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    """Write `rows` as JSONL, atomically; a filesystem fault is one line naming `path` (dpg.run.fsio)."""
    path = Path(path)
    fsio.make_dir(path.parent)
    return fsio.write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_hf(rows: list[dict], path: str | Path) -> Path:
    """Write `rows` as a `datasets` dataset directory (datasets.load_from_disk reads it back), atomically: saved to a
    temporary sibling, then renamed. An existing `path` is an error, never overwritten."""
    from datasets import Dataset

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"--out: {path} already exists; give a new directory for the dataset")
    fsio.make_dir(path.parent)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with fsio.writing(path, "writing the dataset"):
        Dataset.from_list(rows).save_to_disk(str(tmp))
        os.replace(tmp, path)
    return path


def read_completions(path: str | Path) -> list[str]:
    """The "completion" texts of a JSONL dataset or a dataset directory (what `dpg generate` writes, with --format
    jsonl or hf); every row must hold text."""
    path = Path(path)
    if path.is_dir():
        return _read_dataset_dir(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {'is not a file' if path.exists() else 'no such file'}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError as err:
                raise ValueError(f"{path} line {n}: not JSON ({err})") from None
            if not isinstance(row, dict) or "completion" not in row:
                raise ValueError(f"{path} line {n}: no 'completion' field")
            if not isinstance(row["completion"], str):
                raise ValueError(f"{path} line {n}: 'completion' is {row['completion']!r}, not text")
            rows.append(row["completion"])
    if not rows:
        raise ValueError(f"{path}: no completions")
    return rows


def _read_dataset_dir(path: Path) -> list[str]:
    from datasets import load_from_disk

    try:
        ds = load_from_disk(str(path))
    except FileNotFoundError:
        raise ValueError(f"{path}: a directory, but not a dataset saved by `datasets` (dpg generate --format hf)") \
            from None
    if "completion" not in ds.column_names:
        raise ValueError(f"{path}: the dataset has no 'completion' column (columns: {ds.column_names})")
    rows = list(ds["completion"])
    bad = next((i for i, x in enumerate(rows) if not isinstance(x, str)), None)
    if bad is not None:
        raise ValueError(f"{path} row {bad}: 'completion' is {rows[bad]!r}, not text")
    if not rows:
        raise ValueError(f"{path}: no completions")
    return rows

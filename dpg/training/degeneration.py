"""Is the generator degenerating? Diversity and length of one step's completions, and a warning the first time they
collapse (the quickstart generator ends writing "the the the …": the objective rewards exactly that, and nothing
else would say so).

Words are whitespace-separated, so the statistics read the same for any tokenizer:
* `distinct_1`, `distinct_2`: distinct word uni-/bigrams ÷ all of them, pooled over the step's completions (Li et
  al. 2016); None when the step has none (every completion empty, or one word);
* `repetition`: per completion, the share of its word bigrams that already occurred earlier in it, averaged over the
  completions with at least one bigram (0 = no bigram repeats; "the the the the" → 2/3); None when none has one;
* `mean_words`: mean number of words per completion; `empty`: share of completions with no non-space character.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def _distinct(docs: list[list[str]], n: int) -> float | None:
    grams = [g for words in docs for g in _ngrams(words, n)]
    return len(set(grams)) / len(grams) if grams else None


def _repetition(words: list[str]) -> float | None:
    grams = _ngrams(words, 2)
    return 1 - len(set(grams)) / len(grams) if grams else None


def text_stats(texts: list[str]) -> dict:
    """Diversity and length of a batch of completions (see the module docstring)."""
    if not texts:
        raise ValueError("text_stats: no completions")
    docs = [t.split() for t in texts]
    reps = [r for r in map(_repetition, docs) if r is not None]
    return {"distinct_1": _distinct(docs, 1), "distinct_2": _distinct(docs, 2),
            "repetition": sum(reps) / len(reps) if reps else None,
            "mean_words": sum(map(len, docs)) / len(docs),
            "empty": sum(not words for words in docs) / len(docs)}


@dataclass
class CollapseMonitor:
    """Warns once per kind of collapse: distinct-2 under `min_distinct_2`, or a share of empty completions of at
    least `max_empty` (0 turns a check off). `check` returns the warnings that fire at this step."""

    min_distinct_2: float = 0.2
    max_empty: float = 0.75
    fired: set = field(default_factory=set)

    def check(self, step: int, stats: dict, texts: list[str]) -> list[str]:
        found = []
        d2 = stats["distinct_2"]
        if self.min_distinct_2 and d2 is not None and d2 < self.min_distinct_2:
            example = max(texts, key=lambda t: len(t.split()))
            found.append(("distinct_2", f"distinct-2 of its {len(texts)} completions is {d2:.3f} (under "
                                        f"logging.collapse_distinct_2 = {self.min_distinct_2:g}), e.g. "
                                        f"{_clip(example)!r}"))
        if self.max_empty and stats["empty"] >= self.max_empty:
            found.append(("empty", f"{stats['empty']:.0%} of its {len(texts)} completions are empty (at least "
                                   f"logging.collapse_empty = {self.max_empty:g})"))
        new = [(kind, msg) for kind, msg in found if kind not in self.fired]
        self.fired.update(kind for kind, _ in new)
        return [f"step {step}: the generator may be collapsing: {msg}" for _, msg in new]


def _clip(text: str, width: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"

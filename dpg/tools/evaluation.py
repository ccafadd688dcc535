"""Results of `dpg evaluate` / `dpg.evaluate`: Φ and proxies per data source, repeated, with standard errors and
paired differences. Torch-free (statistics and presentation only; `dpg.api.evaluate` produces the numbers).

Repeat r of every source uses the same seeds: the sampling seed `seed + r` and the inner SFT shuffle seed
`inner_sft.seed + r`. The difference of two sources is therefore taken per repeat (paired) before its mean and
standard error, which removes the part of the noise the shuffles share.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dpg.stats import mean_se


@dataclass
class Estimate:
    """A mean over repeats with its standard error (`dpg.stats.mean_se`; None for a single repeat: there is none)."""

    values: list[float]

    @property
    def mean(self) -> float:
        return mean_se(self.values)[0]

    @property
    def se(self) -> float | None:
        return mean_se(self.values)[1] if len(self.values) > 1 else None  # stats' nan for one value: no error bar

    def __format__(self, spec: str) -> str:
        spec = spec or ".4g"
        return f"{self.mean:{spec}}" + ("" if self.se is None else f" ± {self.se:.2g}")

    def to_dict(self) -> dict:
        return {"mean": self.mean, "se": self.se, "values": self.values}


@dataclass
class SourceResult:
    """One evaluated source: a generator ('initial' = the config's) or a dataset file, over the repeats."""

    name: str
    kind: str  # "generator" or "data"
    phi: Estimate
    proxies: dict[str, Estimate]
    examples: list[int]  # per repeat
    truncated: list[int]  # per repeat: completions cut to inner_sft.max_length target tokens
    sft_steps: int

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "phi": self.phi.to_dict(),
                "proxies": {k: v.to_dict() for k, v in self.proxies.items()}, "examples": self.examples,
                "truncated": self.truncated, "sft_steps": self.sft_steps}


@dataclass
class Difference:
    """source − baseline, paired by repeat."""

    source: str
    baseline: str
    phi: Estimate
    proxies: dict[str, Estimate] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"source": self.source, "baseline": self.baseline, "phi": self.phi.to_dict(),
                "proxies": {k: v.to_dict() for k, v in self.proxies.items()}}


@dataclass
class Evaluation:
    """Every source's Φ and proxies (mean ± s.e. over `repeats`), and each source's paired difference from the first
    (the baseline). `str()` is the table `dpg evaluate` prints; `to_dict()` the JSON it writes with --out."""

    sources: list[SourceResult]
    repeats: int
    n: int  # examples sampled per generator and repeat
    seed: int

    def __getitem__(self, name: str) -> SourceResult:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(f"no source {name!r}; evaluated: {[s.name for s in self.sources]}")

    def difference(self, source: str, baseline: str) -> Difference:
        a, b = self[source], self[baseline]
        paired = lambda x, y: Estimate([p - q for p, q in zip(x.values, y.values)])  # noqa: E731
        return Difference(source, baseline, paired(a.phi, b.phi),
                          {k: paired(v, b.proxies[k]) for k, v in a.proxies.items() if k in b.proxies})

    def differences(self) -> list[Difference]:
        """Every source against the first one."""
        return [self.difference(s.name, self.sources[0].name) for s in self.sources[1:]]

    def table(self) -> str:
        names = list(dict.fromkeys(k for s in self.sources for k in s.proxies))
        each = f"mean ± s.e. over {self.repeats} repeats" if self.repeats > 1 else "1 repeat: no error bar"
        rows = [["source", "Φ", *names, "examples"]]
        for s in self.sources:
            rows.append([s.name, f"{s.phi}", *(f"{s.proxies[k]}" if k in s.proxies else "–" for k in names),
                         f"{s.examples[0]}" + (f" ({sum(s.truncated)} cut)" if any(s.truncated) else "")])
        lines = [f"Φ and proxies after a fresh SFT of the target on each source ({each}; higher Φ is better)",
                 *_columns(rows)]
        diffs = self.differences()
        if diffs:
            lines += ["", f"paired difference from {self.sources[0].name} (same seeds per repeat)"]
            rows = [["source", "ΔΦ", *names]]
            for d in diffs:
                rows.append([f"{d.source} − {d.baseline}", f"{d.phi:+.4g}",
                             *(f"{d.proxies[k]:+.4g}" if k in d.proxies else "–" for k in names)])
            lines += _columns(rows)
        return "\n".join(lines)

    __str__ = table

    def to_dict(self) -> dict:
        return {"repeats": self.repeats, "n": self.n, "seed": self.seed,
                "sources": [s.to_dict() for s in self.sources],
                "differences": [d.to_dict() for d in self.differences()]}


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]

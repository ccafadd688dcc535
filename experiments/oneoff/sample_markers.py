"""What the replication's generators write, counted on the committed samples: the share of completions carrying a
marker of each study's target (a hex-like run for uuid, a Spanish function word for language) per sample set, mean
over seeds, and the first completions of one seed as examples. Chosen after the replication's results were known:
descriptive, no test. Writes docs/results/replication_markers.json and prints both tables as markdown.

    python -m experiments.oneoff.sample_markers
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from experiments.judge import read_samples
from experiments.replication import Settings, samples_path
from experiments.replication_plan import DOCS, planned_seeds

# Three or more characters of 0-9a-f mixing digits and letters, like the pieces of a UUID.
HEX_RUN = re.compile(r"(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{3,}")
SPANISH_WORD = re.compile(r"\b(la|el|de|los|las|una|es|en|que|y|con|por|del)\b")
MARKERS = {"uuid": ("hex-like run", HEX_RUN), "language": ("Spanish function word", SPANISH_WORD)}
SETS = ("initial", "dpg_adamw", "naive", "select_4096", "select_40960")
OUT = DOCS.parent / "replication_markers.json"


def completions(docs: Path, study: str, seed: int, name: str) -> list[str] | None:
    path = samples_path(Settings(docs=docs), study, seed, name)
    return [r["completion"] for r in read_samples(path)] if path.is_file() else None


def shares(docs: Path = DOCS) -> dict[str, dict]:
    """{study: {"marker", "sets": {set: {"share": mean over seeds, "seeds": n}}}} for every study with a marker."""
    out = {}
    for study, (marker, pattern) in MARKERS.items():
        by_set = {}
        for name in SETS:
            per_seed = [sum(bool(pattern.search(c)) for c in rows) / len(rows)
                        for s in planned_seeds(study) if (rows := completions(docs, study, s, name))]
            if per_seed:
                by_set[name] = {"share": sum(per_seed) / len(per_seed), "seeds": len(per_seed)}
        out[study] = {"marker": marker, "sets": by_set}
    return out


def examples(docs: Path, study: str, seed: int, name: str, k: int = 4, min_words: int = 3) -> list[str]:
    """The first k completions of at least `min_words` words, in file order (the files are not sorted by score)."""
    return [c.strip() for c in completions(docs, study, seed, name) or [] if len(c.split()) >= min_words][:k]


def markdown(counts: dict, docs: Path = DOCS, seed: int = 100) -> str:
    lines = ["| study | marker | " + " | ".join(SETS) + " |", "|---|---|" + "---|" * len(SETS)]
    for study, d in counts.items():
        cells = [f"{d['sets'][s]['share']:.3f}" if s in d["sets"] else "" for s in SETS]
        lines.append(f"| {study} | {d['marker']} | " + " | ".join(cells) + " |")
    lines += ["", f"| study | set | the first four completions of at least three words (seed {seed}) |",
              "|---|---|---|"]
    for study in ("uuid", "language", "l2_norm"):
        for name in SETS[:3] + SETS[4:]:
            if name == "initial" and study != "uuid":
                continue  # one seed's initial generator is the same in every study
            cell = " · ".join("`" + c.replace("|", "\\|").replace("`", "'") + "`"
                              for c in examples(docs, study, seed, name))
            lines.append(f"| {'every study' if name == 'initial' else study} | {name} | {cell} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    counts = shares()
    OUT.write_text(json.dumps(counts, indent=1) + "\n")
    print(markdown(counts))
    print(f"\nwrote {OUT}")


if __name__ == "__main__":
    main()

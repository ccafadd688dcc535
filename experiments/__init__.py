"""The studies of docs/results.md and docs/results_archive.md (the held-out-judge replication, the batch-size
sweep, the earlier studies) and the estimator-fidelity benchmark; run from the repository root, e.g.
`python -m experiments.run STUDY`. One-off measurements whose outputs are frozen live in experiments/oneoff/."""

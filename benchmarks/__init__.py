"""Cost measurements of the engine and of GRPO steps (docs/performance.md, docs/gpu.md); run from the repository root,
e.g. `python -m benchmarks.metagrad_cost --quick`."""

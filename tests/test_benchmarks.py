"""The benchmark machinery measures what it says: the engine and the naive unroll it is compared with compute the
same metagradients, and a memory child reports each mode's own peak (the unroll keeps every step's graph, so it must
use more memory than plain SFT)."""

from benchmarks import metagrad_cost as mc


def test_cost_benchmark_compares_equal_metagradients_and_reports_memory():
    case = mc.Case("0.1M", 2, seq_len=16, n_examples=8, microbatch=2, heldout=(2, 16))
    r = mc.measure(case, list(mc.MODES), repeats=1, memory=True)
    assert r["accum"] == 2 and 0.09e6 < r["params"] < 0.1e6
    # float32, where AdamW's 1/√v amplifies rounding to ~1e-3 here; a mismatch in the setup (data, batching,
    # hyper-parameters) would differ at O(1). The float64 agreement to 1e-8 is tests/test_engine.py's job.
    assert r["engine_vs_unroll_rel"] < 3e-3
    assert r["states_mb"] == 2 * 4 * r["params"] * 4 / 2**20
    mem = r["memory_mb"]
    assert set(mem) == set(mc.MODES) and mem["unroll"] > mem["sft"] > 0


def test_cost_benchmark_runs_the_graph_budget_modes():
    """engine_half keeps half of the steps' graphs (its budget measured by an engine_all run), engine_all every one;
    both give the engine's metagradients, and every memory child gets the same budget as the timed runs."""
    case = mc.Case("0.1M", 2, seq_len=16, n_examples=8, microbatch=2, heldout=(2, 16))
    r = mc.measure(case, [*mc.MODES, *mc.BUDGET_MODES], repeats=1, memory=True)
    assert r["kept"]["engine_all"]["steps"] == 2 and r["kept"]["engine_half"]["steps"] == 1
    # the measured graph moves by a few kB between runs (storages told apart by address; docs in dpg.engine.graphs)
    half = r["case"]["half_graph_mb"]
    assert abs(half - r["kept"]["engine_all"]["graph_mb"] / 2 * 1.02) < 0.01 * half
    assert r["kept_vs_engine_rel"] < 1e-5  # float32 rounding: the kept path sums before its second backward
    assert set(r["memory_mb"]) == {*mc.MODES, *mc.BUDGET_MODES}

"""A config error comes back before any model library is imported, from every command; the config layer is
torch-free and free of import cycles; InnerSFTConfig keeps its torch-facing behaviour."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dpg.config.schema import load_config
from dpg.engine.sft_config import InnerSFTConfig

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "trl", "datasets", "accelerate", "matplotlib")

# Run `main(argv)` in a fresh interpreter, then report its exit code and which heavy modules got imported.
PROBE = """
import json, sys
from dpg.cli import main
code = main(json.loads(sys.argv[1]))
print(json.dumps({"code": code, "imported": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def probe(argv, cwd=REPO):
    import json

    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], cwd=cwd, capture_output=True, text=True,
                         timeout=120)
    return json.loads(out.stdout.splitlines()[-1]), out.stderr


@pytest.mark.parametrize("argv, message", [
    (["train", "configs/quickstart.yaml", "grpo.steps=-1"],
     "dpg train: error: grpo.steps: must be >= 1 (GRPO steps), got -1"),
    (["train", "configs/quickstart.yaml", "grpo.stepz=1"],
     "dpg train: error: unknown key grpo.stepz: did you mean 'grpo.steps'? (known in grpo: "),
    (["generate", "configs/quickstart.yaml", "objective.name=5", "--out", "x.jsonl"],
     "dpg generate: error: objective.name: expected the name of an objective, got 5"),
    (["evaluate", "configs/quickstart.yaml", "reward.estimator=nope", "--generator", "initial"],
     "dpg evaluate: error: reward.estimator: invalid value 'nope'"),
    (["check", "no/such/config.yaml"], "dpg check: error: config file not found: no/such/config.yaml"),
])
def test_config_errors_come_back_without_importing_torch(argv, message):
    result, err = probe(argv)
    assert result == {"code": 2, "imported": []}
    assert err.startswith(message) and len(err.strip().splitlines()) == 1


def test_plot_errors_without_importing_torch(tmp_path):
    result, err = probe(["plot", str(tmp_path)])
    assert result == {"code": 2, "imported": []}
    assert err.strip() == f"dpg plot: error: {tmp_path}: not a run directory (no log.jsonl; `dpg train` writes one)"


def test_config_layer_imports_no_torch_and_no_heuristics():
    code = ("import sys; import dpg; from dpg.config.schema import load_config; "
            "cfg = dpg.DPGConfig.from_yaml('configs/quickstart.yaml', ['reward.estimator=langid', 'reward.language=es',"
            " 'objective={name: text_loss, texts: [hola]}']); "
            "assert cfg.reward.language == 'es'; "
            "print(sorted(m for m in ('torch', 'dpg.training.heuristics', 'dpg.engine.sft', 'dpg.training.trainer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_inner_sft_dtype_is_a_name_that_accepts_torch_dtypes(tmp_path):
    assert InnerSFTConfig().dtype == "float32" and InnerSFTConfig().torch_dtype is torch.float32
    given = InnerSFTConfig(dtype=torch.float64)
    assert given.dtype == "float64" and given.torch_dtype is torch.float64
    assert given == InnerSFTConfig(dtype="float64")
    with pytest.raises(ValueError, match=r"inner_sft.dtype: unknown dtype torch.int64"):
        InnerSFTConfig(dtype=torch.int64)
    cfg = load_config(None, ["inner_sft.dtype=bfloat16"])
    assert cfg.to_dict()["inner_sft"]["dtype"] == "bfloat16" and cfg.inner_sft.torch_dtype is torch.bfloat16


def test_only_training_imports_trl():
    """evaluate, generate, plot, check and calibrate, and the reward and assembly of a run, work without TRL loaded;
    only the GRPO trainer (dpg.training.trainer: `dpg train` and `--dry-run`) imports it."""
    code = ("import sys; import dpg.api, dpg.tools.calibrate, dpg.tools.check, dpg.tools.evaluation, "
            "dpg.training.assembly, dpg.training.batch_reward, dpg.training.callbacks, dpg.training.sampling, "
            "dpg.run.plotting, dpg.tools.dryrun; print('trl' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr

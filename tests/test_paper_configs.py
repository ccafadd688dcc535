"""The paper's setups (configs/paper/): each builds end to end in a dry run with tiny stand-ins of the same
architecture family; LoRA, vLLM and bf16 settings reach TRL; their errors name the key."""

from pathlib import Path

import pytest

from dpg.config import schema as dpg_config
from dpg.training import assembly, trainer
from dpg.cli import main
from dpg.config.schema import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
PAPER = sorted((REPO / "configs" / "paper").glob("*.yaml"))
LLAMA = "meta-llama/Llama-3.2-1B-Instruct"
GPT2 = "openai-community/gpt2"


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(REPO)  # config paths (the QR bitmap) are relative to the repository root


pytestmark = pytest.mark.usefixtures("one_thread")


def dry_run(capsys, path, *extra, stand_in="always"):
    rc = main(["train", str(path), *extra, "--dry-run", "--stand-in", stand_in])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def line(out: str, prefix: str) -> str:
    found = [x for x in out.splitlines() if x.startswith(prefix)]
    assert len(found) == 1, (prefix, out)
    return found[0]


def lora_params(layers, hidden, intermediate, kv_dim, r):
    """Trainable LoRA parameters of a Llama with adapters on every linear layer: r·(in + out) per projection."""
    per_layer = (2 * (hidden + hidden) + 2 * (hidden + kv_dim)  # q, o; k, v
                 + 2 * (hidden + intermediate) + (intermediate + hidden))  # gate, up; down
    return layers * r * per_layer


def test_the_five_studies_are_there():
    names = {p.stem for p in PAPER}
    assert {"l2_norm", "sixseven", "qr_code", "language", "uuid"} <= names
    for path in PAPER:
        cfg = load_config(path)
        assert cfg.generator.name_or_path == LLAMA and cfg.grpo.num_generations == 4 and cfg.grpo.beta == 0
        assert cfg.grpo.max_completion_length == 128 and cfg.grpo.temperature == 1.0
        assert cfg.inner_sft.examples_per_step == 1024 and cfg.inner_sft.max_length == 128
        assert cfg.inner_sft.loss_normalization == "official" and cfg.inner_sft.betas == (0.9, 0.95)
        if cfg.target.name_or_path == GPT2:  # l2_norm, 67, QR: AdamW 5e-6 inner and actor lr (LoRA variant aside)
            assert cfg.target.untie_lm_head and cfg.inner_sft.lr == 5e-6
        else:  # language, uuid: Llama target, 1e-6
            assert cfg.target.name_or_path == LLAMA and cfg.inner_sft.lr == 1e-6 and cfg.grpo.learning_rate == 1e-6
    qr = load_config(REPO / "configs/paper/qr_code.yaml")
    assert qr.grpo.completions_per_step // qr.inner_sft.examples_per_step == 96 and qr.grpo.steps == 240


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_dry_run_with_stand_ins(capsys, path):
    cfg = load_config(path)
    out = dry_run(capsys, path)
    assert "STAND-INS USED" in out and f"stand-in: generator {LLAMA!r}" in out
    gen = line(out, "generator: ")
    assert gen.startswith("generator: LlamaForCausalLM (family llama, stand-in ") and "full size 1,235,814,400" in gen
    tgt = line(out, "target: ")
    if cfg.target.name_or_path == GPT2:
        assert tgt.startswith("target: GPT2LMHeadModel (family gpt2, stand-in ") and tgt.endswith("LM head untied")
        assert "full size 163,037,184" in tgt  # 124,439,808 + the untied head's own 50257 × 768
    else:
        assert tgt.startswith("target: LlamaForCausalLM (family llama, stand-in ")
    assert line(out, "vLLM: ") == "vLLM: off (generation with transformers)"
    assert "GRPOConfig bf16=False" in line(out, "precision: ")  # no CUDA here: auto stays fp32
    assert line(out, "objective: ").startswith(f"objective: {cfg.objective['name']}")
    g = cfg.grpo
    assert f"({g.prompts_per_step} prompts × 4 generations = {g.completions_per_step} completions)" in out
    lora = line(out, "LoRA: ")
    if cfg.generator.lora is None:
        assert lora.startswith("LoRA: off")
    else:
        r = cfg.generator.lora.r
        stand_in = lora_params(2, 64, 128, 32, r)  # the stand-in: 2 layers, 64 dims, 2 of 4 heads for k/v
        full = lora_params(16, 2048, 8192, 512, r)  # Llama-3.2-1B
        assert f"LoRA: on (r {r}," in lora and f": {stand_in:,} trainable of " in lora
        assert "(PeftModelForCausalLM)" in lora and f"full size {full:,} trainable" in lora


def test_missing_objective_data_is_stood_in_and_said(capsys):
    out = dry_run(capsys, REPO / "configs/paper/language.yaml")
    assert "note: objective.path 'data/paper/lambada_openai_mt_es/train.jsonl' not found" in out


def test_dry_run_without_stand_in_names_the_missing_model(capsys):
    assert main(["train", "configs/paper/sixseven.yaml", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"could not find model {GPT2!r} offline" in err and "--stand-in" in err


def test_stand_in_needs_dry_run(capsys):
    assert main(["train", "configs/paper/sixseven.yaml", "--stand-in"]) == 2
    assert "--stand-in only goes with --dry-run" in capsys.readouterr().err


def test_lora_on_any_config_by_override(capsys):
    out = dry_run(capsys, REPO / "configs/paper/uuid.yaml", "generator.lora.r=4", "generator.lora.target_modules=[q_proj,v_proj]")
    # q: r·(64 + 64), v: r·(64 + 32) per layer, 2 layers
    assert f": {2 * 4 * (128 + 96):,} trainable of " in line(out, "LoRA: on (r 4,")
    assert f"full size {16 * 4 * (4096 + 2560):,} trainable" in out


@pytest.mark.parametrize("override, message", [
    ("generator.lora.rank=8", r"unknown key generator.lora.rank \(known in generator.lora: alpha, dropout, "),
    ("generator.lora.alfa=8", r"unknown key generator.lora.alfa: did you mean 'generator.lora.alpha'\? "),
    ("generator.lora.r=0", r"generator.lora.r: must be >= 1 \(the rank of the adapters\), got 0"),
    ("generator.lora.alpha=-1", r"generator.lora.alpha: must be > 0 \(peft's lora_alpha: .*\), got -1"),
    ("generator.lora.dropout=1.5", r"generator.lora.dropout: must be in \[0, 1\) \(peft's lora_dropout, a probability\), "
                                   r"got 1.5"),
    ("generator.lora.target_modules=3", r"generator.lora.target_modules: invalid value 3"),
    ("generator.lora.target_modules=[]", r"generator.lora.target_modules: expected module names"),
    ("target.lora={r: 8}", r"target.lora: LoRA applies to the generator only"),
    ("grpo.vllm_mode=remote", r"grpo.vllm_mode: invalid value 'remote'; choose one of \['colocate', 'server'\]"),
    ("grpo.vllm_gpu_memory_utilization=1.5", r"grpo.vllm_gpu_memory_utilization: must be in \(0, 1\] \(colocate: the "
                                             r"share of GPU memory vLLM may take\), got 1.5"),
    ("grpo.vllm_tensor_parallel_size=0", r"grpo.vllm_tensor_parallel_size: must be >= 1 \(colocate: GPUs per vLLM "
                                         r"model\), got 0"),
    ("grpo.vllm_server_port=70000", r"grpo.vllm_server_port: must be in \[1, 65535\] \(server: a port number\), "
                                    r"got 70000"),
    ("grpo.use_vllm=often", r"grpo.use_vllm: expected true or false, got 'often'"),
    ("grpo.bf16=sometimes", r"grpo.bf16: invalid value 'sometimes'"),
    ("grpo.vllm_typo=1", r"unknown key grpo.vllm_typo"),
])
def test_lora_and_vllm_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(REPO / "configs/paper/sixseven.yaml", [override])


def test_use_vllm_without_vllm_is_a_named_error(capsys, monkeypatch):
    monkeypatch.setattr(dpg_config, "_importable", lambda module: module != "vllm")
    assert main(["train", "configs/paper/sixseven.yaml", "grpo.use_vllm=true", "--dry-run"]) == 2
    assert "grpo.use_vllm: true needs the vllm package" in capsys.readouterr().err
    assert main(["train", "configs/paper/sixseven.yaml", "grpo.use_vllm=true", "output_dir=/nonexistent/x"]) == 2
    assert "grpo.use_vllm: true needs the vllm package" in capsys.readouterr().err  # before anything is written


def test_lora_without_peft_is_a_named_error(capsys, monkeypatch):
    monkeypatch.setattr(dpg_config, "_importable", lambda module: module != "peft")
    assert main(["train", "configs/paper/sixseven_lora.yaml", "--dry-run", "--stand-in"]) == 2
    assert "generator.lora: needs the optional package peft" in capsys.readouterr().err


def test_too_few_prompts_is_a_named_error(capsys):
    assert main(["train", "configs/paper/sixseven.yaml", "prompts.repeat=false", "--dry-run", "--stand-in"]) == 2
    assert "grpo.prompts_per_step: 256 is more than the 200 prompts of prompts.source 'builtin'" in \
        capsys.readouterr().err


def test_grpo_config_fields_reach_trl(tmp_path):
    cfg = load_config(REPO / "configs/paper/sixseven.yaml", [
        f"output_dir={tmp_path}", "grpo.use_vllm=true", "grpo.vllm_mode=server",
        "grpo.vllm_server_base_url=http://localhost:8000", "grpo.vllm_server_timeout=30",
        "grpo.vllm_gpu_memory_utilization=0.5", "grpo.vllm_tensor_parallel_size=2", "grpo.vllm_max_model_length=1024",
        "grpo.vllm_enable_sleep_mode=true"])
    args = trainer.grpo_args(cfg)  # GRPOConfig itself needs no vllm; the trainer would start it
    assert args.use_vllm and args.vllm_mode == "server" and args.vllm_server_base_url == "http://localhost:8000"
    assert args.vllm_server_timeout == 30 and args.vllm_gpu_memory_utilization == 0.5
    assert args.vllm_tensor_parallel_size == 2 and args.vllm_max_model_length == 1024 and args.vllm_enable_sleep_mode
    assert args.per_device_train_batch_size == 8 and args.gradient_accumulation_steps == 128
    assert args.num_generations == 4 and args.learning_rate == 5e-6 and args.max_completion_length == 128
    assert args.bf16 is False  # auto, and no CUDA here
    assert trainer.grpo_args(load_config(None, [f"output_dir={tmp_path}", "grpo.bf16=true"])).bf16 is True
    lora = assembly.lora_config(load_config(REPO / "configs/paper/sixseven_lora.yaml"))
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.target_modules) == (16, 32, 0.0, "all-linear")
    assert assembly.lora_config(cfg) is None


@pytest.mark.filterwarnings("ignore:fan_in_fan_out")  # peft switches it on itself for GPT-2's Conv1D layers
def test_lora_training_merges_the_adapters_into_the_final_generator(tmp_path):
    from safetensors.torch import load_file

    from dpg.training import models

    fast = ["generator.pretrain_steps=0", "grpo.prompts_per_step=2", "grpo.num_generations=2", "grpo.micro_batch_size=4",
            "grpo.max_completion_length=6", "inner_sft.microbatch_size=4", "inner_sft.max_length=12",
            "logging.progress=false", "prompts.limit=4", "grpo.steps=1", "grpo.learning_rate=1e-2"]
    assert main(["train", "configs/quickstart.yaml", f"output_dir={tmp_path}", *fast, "generator.lora={r: 4}"]) == 0
    final = load_file(str(tmp_path / "final" / "model.safetensors"))
    initial = models.load_model("tiny", role="generator", seed=0).state_dict()
    assert set(final) <= set(initial)  # a plain HF model: no peft prefixes, no adapter tensors
    moved = {k for k in final if not (final[k] == initial[k]).all()}
    assert "transformer.h.0.attn.c_attn.weight" in moved  # the adapters were trained and folded in
    assert not any("wte" in k or "wpe" in k or "ln_" in k for k in moved)  # only the adapted linear layers changed


def test_stand_in_dry_run_of_a_vllm_config_says_vllm_is_not_started(capsys, monkeypatch):
    monkeypatch.setattr(dpg_config, "_importable", lambda module: module != "vllm")
    out = dry_run(capsys, REPO / "configs/paper/sixseven.yaml", "grpo.use_vllm=true", "grpo.vllm_mode=server")
    assert line(out, "vLLM: ") == ("vLLM: on (server at 0.0.0.0:8000), not started: a stand-in dry run (vLLM would "
                                   "load the real weights); vllm is NOT importable here")

"""`dpg train CONFIG --dry-run [--stand-in]`: build everything a run needs, train nothing, print a summary.

The dry run validates the config, checks the environment (peft for LoRA, vllm for vLLM), loads the prompts, builds
the target, the objective and the metagradient engine, the generator (with its LoRA adapters, if configured), the
GRPOConfig and the DPGTrainer exactly as `dpg train` would, and prints what it built.

Stand-ins. Hub models (e.g. ``meta-llama/Llama-3.2-1B-Instruct``) cannot be downloaded here. With ``--stand-in``
(``missing``: only for models not found offline; ``always``: for every model that is not an embedded tiny one) the
dry run builds a TINY model of the SAME architecture family instead (a LlamaConfig for Llama, a GPT2Config for
GPT-2, ...), from the real model's configuration with only the sizes shrunk, with the real tokenizer when it is
cached and the embedded tiny BPE tokenizer otherwise. LoRA, untying, dtypes and the trainer are applied to the
stand-in as they would be to the real model. For the architectures dpg knows (`KNOWN_ARCHITECTURES`) the summary
also counts the full-size parameters (and LoRA parameters) on the meta device, which allocates no memory. The
summary says which models are stand-ins; a stand-in is never trained.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from dpg.training import models
from dpg.config.names import TINY_NAMES
from dpg.config import schema as dpg_config
from dpg.config.schema import DPGConfig, ModelSpec, check_environment

STAND_IN_MODES = ("missing", "always")

# Architectures of the hub models the paper configs name, as in their config.json: a stand-in copies everything but
# the sizes, and the full-size parameter count is taken from a meta-device instance of exactly this configuration.
_LLAMA_3_2_1B = dict(
    hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
    head_dim=64, vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5, hidden_act="silu",
    rope_theta=500000.0, tie_word_embeddings=True, bos_token_id=128000, eos_token_id=[128001, 128008, 128009],
    rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
)
_GPT2_124M = dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024, tie_word_embeddings=True,
                  bos_token_id=50256, eos_token_id=50256)
KNOWN_ARCHITECTURES: dict[str, tuple[str, dict]] = {
    "meta-llama/Llama-3.2-1B-Instruct": ("llama", _LLAMA_3_2_1B),
    "meta-llama/Llama-3.2-1B": ("llama", _LLAMA_3_2_1B),
    "gpt2": ("gpt2", _GPT2_124M),
    "openai-community/gpt2": ("gpt2", _GPT2_124M),
}
# Other names: the family is guessed from the name (first match wins); no full-size count then.
_NAME_FAMILIES = (("smollm", "llama"), ("llama", "llama"), ("gpt2", "gpt2"), ("qwen2", "qwen2"), ("qwen3", "qwen3"),
                  ("mistral", "mistral"))
# The tiny sizes of a stand-in, per family (model_type). Dropout off, as for the embedded tiny models.
_DECODER = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16)  # rotary positions: the real context length costs nothing
TINY_SIZES = {
    "gpt2": dict(n_layer=2, n_embd=64, n_head=4, n_positions=512, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    "llama": _DECODER, "qwen2": _DECODER, "qwen3": _DECODER, "mistral": _DECODER,
}


@dataclasses.dataclass
class Built:
    """One model of the dry run and how it came to be."""

    model: PreTrainedModel
    tokenizer: object
    stand_in: str | None = None  # why and what, when the configured model was replaced
    family: str = ""
    full_size: dict | None = None  # {"params": n, "lora_trainable": n} of the real architecture (meta device)


def architecture(name: str, role: str) -> tuple[str, dict]:
    """(model_type, full config fields or {}) of a model name, for building its stand-in."""
    if name in KNOWN_ARCHITECTURES:
        return KNOWN_ARCHITECTURES[name]
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        cfg = AutoConfig.from_pretrained(path, local_files_only=True)
        fields = {k: v for k, v in cfg.to_dict().items() if not k.startswith(("_", "transformers_version"))}
        return cfg.model_type, fields
    low = name.lower()
    for pattern, family in _NAME_FAMILIES:
        if pattern in low:
            return family, {}
    raise ValueError(f"{role}.name_or_path: cannot tell the architecture family of {name!r} to build a stand-in; "
                     f"known names: {sorted(KNOWN_ARCHITECTURES)}; families recognised in a name: "
                     f"{sorted({f for _, f in _NAME_FAMILIES})}")


def stand_in_model(name: str, role: str, spec: ModelSpec, tokenizer, seed: int = 0) -> tuple[PreTrainedModel, str]:
    """A tiny, seeded model of `name`'s architecture family, sized for `tokenizer`. Returns (model, family)."""
    family, fields = architecture(name, role)
    if family not in TINY_SIZES:
        raise ValueError(f"{role}.name_or_path: no stand-in sizes for the {family!r} family of {name!r}; "
                         f"known families: {sorted(TINY_SIZES)}")
    keep = {k: v for k, v in fields.items() if k not in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id",
                                                         "architectures", "dtype", "torch_dtype", "model_type")}
    ids = dict(bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id,
               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = AutoConfig.for_model(family, **{**keep, **TINY_SIZES[family], "vocab_size": len(tokenizer), **ids})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=spec.attn_implementation
                                                 or models.DEFAULT_ATTN[role])
    model = model.to(getattr(torch, spec.dtype))
    if spec.untie_lm_head:
        models.untie_lm_head_(model)
    return model.eval(), family


def full_size(name: str, spec: ModelSpec) -> dict | None:
    """Parameter counts of the real architecture of a known name, on the meta device (no memory): the model as
    configured (untied head counted twice), and the trainable LoRA parameters when generator.lora is set."""
    if name not in KNOWN_ARCHITECTURES:
        return None
    family, fields = KNOWN_ARCHITECTURES[name]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(family, **fields))
    out = {"params": _count(model)}
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if spec.untie_lm_head and head is not None and head.weight is emb.weight:
        out["params"] += emb.weight.numel()  # untying gives the head its own copy
    if spec.lora is not None:
        from peft import get_peft_model

        out["lora_trainable"] = _count(get_peft_model(model, _lora(spec)), trainable=True)
    return out


def _lora(spec: ModelSpec):
    from dpg.training.assembly import lora_config

    return lora_config(DPGConfig(generator=spec))


def _count(model, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def _load(cfg: DPGConfig, role: str, stand_in: str | None) -> Built:
    """The configured model, or its stand-in (see the module docstring)."""
    from dpg.training import assembly

    spec: ModelSpec = getattr(cfg, role)
    name = spec.name_or_path
    if name in TINY_NAMES or name == models.SMOLLM2_NAME or not stand_in:
        model, tok = assembly.load_generator(cfg) if role == "generator" else assembly.load_target(cfg)
        return Built(model, tok, family=model.config.model_type)
    reason = "--stand-in always"
    if stand_in == "missing":
        try:
            model, tok = assembly.load_generator(cfg) if role == "generator" else assembly.load_target(cfg)
            return Built(model, tok, family=model.config.model_type)
        except models.ModelNotFoundError:
            reason = "not available offline"
    tok_name = spec.tokenizer or name
    try:
        tok, tok_note = models.load_tokenizer(tok_name), f"its real tokenizer ({tok_name}, cached)"
    except (models.ModelNotFoundError, OSError, ValueError):
        tok, tok_note = models.build_tokenizer("bpe"), (f"the embedded tiny-bpe tokenizer ({tok_name!r} is not "
                                                       "cached)")
    model, family = stand_in_model(name, role, spec, tok, seed=cfg.seed + (1 if role == "target" else 0))
    if role == "target":
        model = model.to(assembly.target_device())  # as load_target does
    size = model.config
    dims = getattr(size, "hidden_size", None) or getattr(size, "n_embd", None)
    layers = getattr(size, "num_hidden_layers", None) or getattr(size, "n_layer", None)
    note = (f"{name!r} {reason}: built a tiny {type(model).__name__} from a {type(size).__name__} ({layers} layers, "
            f"{dims} dims, vocab {len(tok)}) with {tok_note}")
    return Built(model, tok, stand_in=note, family=family, full_size=full_size(name, spec))


def _objective_stand_in(cfg: DPGConfig) -> tuple[dict, str | None]:
    """text_loss on a data file that is not here (e.g. the LAMBADA translations): a few shipped corpus lines instead."""
    obj = dict(cfg.objective)
    path = obj.get("path")
    if obj.get("name") != "text_loss" or path is None or Path(path).exists():
        return obj, None
    for key in ("path", "field", "pair_fields", "split"):
        obj.pop(key, None)
    obj["texts"] = models.corpus_lines()[:8]
    return obj, (f"objective.path {path!r} not found: text_loss built on 8 lines of the shipped corpus instead "
                 "(Φ and its values are not the paper's)")


def dry_run(cfg: DPGConfig, stand_in: str | None = None, config_path: str | None = None) -> str:
    """Build everything `dpg train` builds (see the module docstring) and return the summary text."""
    import dpg.objectives as objectives
    from datasets import Dataset

    from dpg.training import assembly, trainer  # TRL: the GRPO trainer is built here, and only here
    from dpg.training.batch_reward import DPGReward
    from dpg.engine.metagrad import MetagradEngine

    if stand_in is not None and stand_in not in STAND_IN_MODES:
        raise ValueError(f"--stand-in: invalid value {stand_in!r}; choose one of {list(STAND_IN_MODES)}")
    # vLLM loads the real weights by name, so a stand-in dry run never starts it (and does not need it installed);
    # with the configured models the trainer starts vLLM (colocate) or connects to its server, as `dpg train` would.
    no_vllm = dataclasses.replace(cfg, grpo=dataclasses.replace(cfg.grpo, use_vllm=False))
    check_environment(no_vllm if stand_in else cfg)
    prompts = assembly.load_prompts(cfg)
    assembly.check_prompt_count(cfg, prompts)
    notes = []
    target = _load(cfg, "target", stand_in)
    objective_cfg, obj_note = _objective_stand_in(cfg) if stand_in else (cfg.objective, None)
    objective = objectives.from_config(objective_cfg, model=target.model, tokenizer=target.tokenizer)
    engine = MetagradEngine(target.model, objective, cfg.inner_sft)
    generator = _load(cfg, "generator", stand_in)
    if stand_in and cfg.prompts.chat and getattr(generator.tokenizer, "chat_template", None) is None:
        # The embedded tokenizer has no chat template; a plain one lets the trainer format the prompts.
        generator.tokenizer.chat_template = ("{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
                                             "{% if add_generation_prompt %}{% endif %}")
        notes.append("generator tokenizer: a plain chat template was set on the stand-in tokenizer")
    gen_params = _count(generator.model)
    with tempfile.TemporaryDirectory(prefix="dpg-dry-run-") as tmp:  # the trainer may create its output_dir
        args = trainer.grpo_args(dataclasses.replace(no_vllm if stand_in else cfg, output_dir=tmp))
        reward = DPGReward(engine, target.tokenizer, cfg)
        built = trainer.DPGTrainer(model=generator.model, dpg_reward=reward, args=args,
                                   processing_class=generator.tokenizer, peft_config=assembly.lora_config(cfg),
                                   train_dataset=Dataset.from_dict({"prompt": prompts}))
        policy = built.model
        trainable = _count(policy, trainable=True)
        del built
    return _summary(cfg, config_path, stand_in, generator, target, engine, args, policy, gen_params, trainable,
                    len(prompts), notes + ([obj_note] if obj_note else []))


def _summary(cfg, config_path, stand_in, gen: Built, tgt: Built, engine, args, policy, gen_params, trainable,
             n_prompts, notes) -> str:
    g, s = cfg.grpo, cfg.inner_sft
    stand_ins = [f"{role} {b.stand_in}" for role, b in (("generator", gen), ("target", tgt)) if b.stand_in]
    lines = [f"dpg train --dry-run {config_path or ''}".rstrip()]
    if stand_ins:
        lines.append("STAND-INS USED: the models below are NOT the configured ones; their parameter counts are the "
                     "stand-ins' (full-size counts, where shown, are of the real architecture on the meta device)")
        lines += [f"  stand-in: {x}" for x in stand_ins]
    else:
        lines.append("stand-ins: none (the configured models were built)")
    lines += [f"  note: {n}" for n in notes]

    def model_line(role, b: Built, m, params):
        head = "untied" if not models.is_tied(m) else "tied"
        full = ""
        if b.full_size:
            full = f", full size {b.full_size['params']:,}"
        kind = "stand-in" if b.stand_in else "configured"
        return (f"{role}: {type(m).__name__} (family {b.family}, {kind} {getattr(cfg, role).name_or_path}), "
                f"{params:,} parameters{full}, dtype {str(next(m.parameters()).dtype).removeprefix('torch.')}, "
                f"device {next(m.parameters()).device}, LM head {head}")

    lines.append(model_line("generator", gen, gen.model, gen_params))
    lines.append(model_line("target", tgt, engine.model, _count(engine.model)))
    lora = cfg.generator.lora
    if lora is None:
        lines.append(f"LoRA: off (full fine-tuning: {trainable:,} trainable generator parameters)")
    else:
        full = ""
        if gen.full_size and "lora_trainable" in gen.full_size:
            full = f"; full size {gen.full_size['lora_trainable']:,} trainable"
        lines.append(f"LoRA: on (r {lora.r}, alpha {lora.alpha:g}, dropout {lora.dropout:g}, target_modules "
                     f"{lora.target_modules}): {trainable:,} trainable of {_count(policy):,} parameters "
                     f"({type(policy).__name__}){full}")
    mode = (f"colocate, gpu_memory_utilization {g.vllm_gpu_memory_utilization:g}" if g.vllm_mode == "colocate"
            else f"server at {g.vllm_server_base_url or f'{g.vllm_server_host}:{g.vllm_server_port}'}")
    if not g.use_vllm:
        lines.append("vLLM: off (generation with transformers)")
    elif args.use_vllm:
        lines.append(f"vLLM: on ({mode}), started by the trainer")
    else:
        lines.append(f"vLLM: on ({mode}), not started: a stand-in dry run (vLLM would load the real weights); vllm "
                     f"{'is' if dpg_config._importable('vllm') else 'is NOT'} importable here")
    lines.append(f"precision: GRPOConfig bf16={args.bf16} (grpo.bf16 {g.bf16!r}, CUDA "
                 f"{'available' if torch.cuda.is_available() else 'not available'}); target and inner SFT in "
                 f"{str(s.dtype).removeprefix('torch.')}")
    params = {k: v for k, v in cfg.objective.items() if k != "name"}
    lines.append(f"objective: {cfg.objective['name']} {params if params else ''}".rstrip())
    lines.append(f"inner SFT: {s.optimizer} lr {s.lr:g}, {s.microbatch_size} × {s.grad_accum_steps} = "
                 f"{s.examples_per_step} examples per step, {-(-g.completions_per_step // s.examples_per_step)} "
                 f"step(s) per reward call, max_length {s.max_length}, loss {s.loss_normalization}, epochs {s.epochs}")
    lines.append(f"GRPO: {g.steps} steps × ({g.prompts_per_step} prompts × {g.num_generations} generations = "
                 f"{g.completions_per_step} completions), micro-batch {g.micro_batch_size} × "
                 f"{args.gradient_accumulation_steps} accumulation, lr {g.learning_rate:g}, beta {g.beta:g}, "
                 f"temperature {g.temperature:g}, ≤ {g.max_completion_length} completion tokens")
    lines.append(f"reward: {cfg.reward.estimator}, {cfg.reward.batching}, advantages {cfg.reward.advantages}")
    lines.append(f"prompts: {n_prompts} ({cfg.prompts.source}{', repeated' if cfg.prompts.repeat else ''}"
                 f"{', chat' if cfg.prompts.chat else ''})")
    lines.append(f"trainer: {type(engine).__name__} + DPGTrainer built, nothing trained; output_dir {cfg.output_dir} "
                 "(not created)")
    return "\n".join(lines)

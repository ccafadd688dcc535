"""The reward path: completion order, batching modes, the naive estimator and the advantage scaling."""

import pytest
import torch
from conftest import tiny_gpt2
from transformers import PreTrainedTokenizerFast

from dpg import InnerSFTConfig, MetagradEngine
from dpg.config.schema import DPGConfig, GRPOSection, RewardConfig
from dpg.training.rewards import (advantages, completion_text, completion_texts, compute_rewards, sft_runs,
                                  to_target_examples)
from dpg.training.batch_reward import DPGReward

MARK = 7  # the token id the objective wants the target to predict


def likes_mark(model, params):
    """Φ = log p(MARK | token 3): data containing "3 7" should raise it, so those completions earn the top rewards."""
    logits = torch.func.functional_call(model, params, (torch.tensor([[3]]),)).logits
    return torch.log_softmax(logits[0, -1], -1)[MARK]


def engine(optimizer="sgd"):
    cfg = InnerSFTConfig(optimizer=optimizer, lr=0.5 if optimizer == "sgd" else 1e-2, microbatch_size=4,
                         grad_accum_steps=1, max_length=16, dtype=torch.float64)
    return MetagradEngine(tiny_gpt2(), likes_mark, cfg)


def batch(n_prompts=3, n=4, marked=(5, 10)):
    """Prompt-major completions; those at `marked` contain the pattern the objective rewards."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n_prompts * n):
        ids = torch.randint(10, 60, (8,), generator=g).tolist()
        if i in marked:
            ids[:4] = [3, MARK, 3, MARK]  # at the start: exactly the context Φ queries
        out.append(ids)
    return out


@pytest.mark.parametrize("batching", ["cross_group", "inverse_groups"])
def test_rewards_follow_completion_order(batching):
    examples = batch()
    out = compute_rewards(engine(), examples, 4, "metagrad", batching)
    runs = sft_runs(len(examples), 4, batching)
    for run in runs:  # marked completions top their SFT run, wherever the shuffled schedule put them
        marked = {i for i in run if i in (5, 10)}
        top = out.rewards[run].topk(len(marked)).indices.tolist()
        assert {run[t] for t in top} == marked
    for run in runs:  # and each value is the engine's for its own run
        ref = engine().run([examples[i] for i in run]).metagrads.double()
        assert torch.allclose(out.rewards[run], ref, rtol=1e-12, atol=0)


def test_inverse_groups_hold_no_siblings():
    runs = sft_runs(12, 4, "inverse_groups")
    assert runs == [[0, 4, 8], [1, 5, 9], [2, 6, 10], [3, 7, 11]]
    assert sft_runs(12, 4, "cross_group") == [list(range(12))]
    with pytest.raises(ValueError, match="not whole groups"):
        sft_runs(10, 4, "cross_group")


def test_naive_gives_one_value_per_inverse_group_and_zero_mean_batch_advantages():
    examples = batch()
    out = compute_rewards(engine(), examples, 4, "naive", "inverse_groups")
    assert out.runs == 4
    for run in sft_runs(12, 4, "inverse_groups"):
        assert len(set(out.rewards[run].tolist())) == 1
        assert out.rewards[run[0]].item() == engine().value([examples[i] for i in run])
    assert len(set(out.rewards.tolist())) == 4
    adv, info = advantages(out.rewards, 4, "batch", 1e-3)
    assert abs(adv.mean().item()) < 1e-12
    assert adv.std().item() == pytest.approx(1.0, rel=1e-2)


def test_advantage_scale_is_relative_to_the_rewards():
    r = torch.tensor([1.0, 2.0, 4.0, 3.0, -1.0, 0.0, 2.0, 5.0], dtype=torch.float64)
    a_big, info_big = advantages(r, 4, "grouped", 1e-3)
    a_small, info_small = advantages(r * 1e-9, 4, "grouped", 1e-3)
    assert torch.allclose(a_big, a_small, rtol=1e-9)  # metagradients of 1e-9 are not crushed by a fixed floor
    g = r.view(2, 4)
    spread = (r - r.mean()).pow(2).mean().sqrt()
    expected = ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-3 * spread)).flatten()
    assert torch.allclose(a_big, expected, rtol=1e-12)
    assert info_small["eps_floor"] == pytest.approx(1e-12 * spread.item())
    assert info_small["raw_std"] < info_small["trl_eps_floor"]


@pytest.mark.parametrize("mode", ["grouped", "batch"])
def test_advantages_ignore_a_constant_offset_of_the_rewards(mode):
    # naive's rewards are Φ values: on l2_norm about −32 with a spread of 0.002 across SFT runs. Their advantages must
    # be those of the centred rewards, not shrunk by the offset (a floor relative to RMS(r) shrank them ~17×).
    r = torch.tensor([1.0, 2.0, 4.0, 3.0, -1.0, 0.0, 2.0, 5.0], dtype=torch.float64) * 1e-3
    a_centred, _ = advantages(r, 4, mode, 1e-3)
    a_offset, info = advantages(r - 32.0, 4, mode, 1e-3)
    assert torch.allclose(a_offset, a_centred, rtol=1e-9, atol=1e-9)
    assert info["eps_floor"] < 1e-3 * info["raw_std"] * 1.01
    if mode == "batch":
        assert a_offset.std().item() == pytest.approx(1.0, rel=2e-3)


def test_advantages_reject_non_finite_rewards():
    with pytest.raises(FloatingPointError, match=r"completions \[2\]"):
        advantages(torch.tensor([1.0, 2.0, float("nan"), 0.0]), 2, "grouped", 1e-3)


def test_all_zero_rewards_give_zero_advantages():
    adv, _ = advantages(torch.zeros(8, dtype=torch.float64), 4, "grouped", 1e-3)
    assert torch.equal(adv, torch.zeros(8, dtype=torch.float64))


def char_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<eos>": 0, "<pad>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate("abcdefghij ")}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", bos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")


def test_retokenization_adds_bos_eos_and_truncates():
    tok = char_tokenizer()
    examples, truncated = to_target_examples(["abc", "", "abcdefghij abcdefghij"], tok, max_length=8)
    assert examples[0] == [0, 3, 4, 5, 0]
    assert examples[1] == [0, 0]  # an empty completion is a 2-token example: "the document ends at once"
    assert len(examples[2]) == 8 and truncated == 1
    assert completion_text([{"role": "assistant", "content": "hi"}]) == "hi"


def test_reward_callable_scores_text_from_another_tokenizer():
    """Generator text (any tokenizer) is re-tokenized with the target's; the reward is the engine's on those ids."""
    tok = char_tokenizer()
    cfg = DPGConfig(grpo=GRPOSection(prompts_per_step=2, num_generations=2, micro_batch_size=4),
                    reward=RewardConfig(batching="cross_group"))
    cfg.inner_sft = InnerSFTConfig(optimizer="sgd", lr=0.5, microbatch_size=2, max_length=16, dtype=torch.float64)
    eng = MetagradEngine(tiny_gpt2(vocab_size=14), lambda m, p: -p["lm_head.weight"].norm(), cfg.inner_sft)
    texts = ["abc", "ja", "", "hij hij"]
    rewards = DPGReward(eng, tok, cfg)(prompts=["p", "p", "q", "q"], completions=texts)
    examples, _ = to_target_examples(texts, tok, 16)
    assert rewards == eng.run(examples).metagrads.tolist()


def test_a_chat_completion_without_content_is_scored_as_empty_text_and_counted():
    """An assistant message whose content is None (the model wrote no text, e.g. only a tool call) is the empty
    completion, counted in `empty_content`; never the text "None". Content of another kind is an error naming it."""
    said, silent = [{"role": "assistant", "content": "abc"}], [{"role": "assistant", "content": None}]
    texts, empty_content = completion_texts([said, silent, [{"role": "assistant"}], "ja"])
    assert texts == ["abc", "", "", "ja"] and empty_content == 2
    cfg = DPGConfig(grpo=GRPOSection(prompts_per_step=2, num_generations=2, micro_batch_size=4))
    cfg.inner_sft = InnerSFTConfig(optimizer="sgd", lr=0.5, microbatch_size=2, max_length=16, dtype=torch.float64)
    eng = MetagradEngine(tiny_gpt2(vocab_size=14), lambda m, p: -p["lm_head.weight"].norm(), cfg.inner_sft)
    reward = DPGReward(eng, char_tokenizer(), cfg)
    chat = reward.score(["p", "p", "q", "q"], [said, silent, said, [{"role": "assistant", "content": "hij"}]], step=1)
    assert chat["completions"] == ["abc", "", "abc", "hij"] and chat["empty_content"] == 1
    plain = reward.score(["p", "p", "q", "q"], ["abc", "", "abc", "hij"], step=1)
    assert torch.equal(chat["rewards"], plain["rewards"]) and plain["empty_content"] == 0
    parts = [{"role": "assistant", "content": [{"type": "text", "text": "abc"}]}]
    with pytest.raises(TypeError, match=r"^completion 1: the assistant message's content is \[\{'type': 'text'"):
        completion_texts([said, parts])
    with pytest.raises(TypeError, match="^completion 0: expected a string or a list of chat messages, got NoneType"):
        completion_texts([None])


def test_reward_callable_leave_group_out_draws_a_seeded_partition_per_call():
    tok = char_tokenizer()
    cfg = DPGConfig(grpo=GRPOSection(prompts_per_step=2, num_generations=2, micro_batch_size=4),
                    reward=RewardConfig(estimator="leave_group_out", groups=2, compare_every=1))
    cfg.inner_sft = InnerSFTConfig(optimizer="sgd", lr=0.5, microbatch_size=2, max_length=16, dtype=torch.float64)
    eng = MetagradEngine(tiny_gpt2(vocab_size=14), lambda m, p: -p["lm_head.weight"].norm(), cfg.inner_sft)
    texts = ["abc", "ja", "", "hij hij"]
    reward = DPGReward(eng, tok, cfg)
    out = reward.score(["p", "p", "q", "q"], texts, step=1)
    examples, _ = to_target_examples(texts, tok, 16)
    again = compute_rewards(eng, examples, 2, "leave_group_out", "cross_group", 2, torch.Generator().manual_seed(0))
    assert torch.equal(out["rewards"], again.rewards)  # the run's seed (0) seeds the partitions
    assert len(set(out["rewards"].tolist())) == 2
    assert {"first_order_spearman", "loo_pearson"} <= set(out["info"])  # compare_every: 1


def test_spearman_and_first_order_estimator():
    from dpg.training.rewards import agreement, pearson, spearman

    a = torch.tensor([0.1, 0.5, 0.2, 0.9], dtype=torch.float64)
    assert spearman(a, a * 3 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, torch.tensor([4.0, 1.0, 3.0, 2.0])) == pytest.approx(-0.8)  # 1 − 6·Σd²/(n(n²−1)), Σd² = 18
    examples = batch()
    fo = compute_rewards(engine(), examples, 4, "first_order", "inverse_groups")
    for run in sft_runs(12, 4, "inverse_groups"):
        assert torch.allclose(fo.rewards[run], engine().first_order([examples[i] for i in run]).double())
    exact = compute_rewards(engine(), examples, 4, "metagrad", "inverse_groups").rewards
    loo = compute_rewards(engine(), examples, 4, "loo", "inverse_groups").rewards
    agree = agreement(engine(), examples, exact, 4, "inverse_groups", loo_max_examples=3)
    assert agree["first_order_spearman"] == pytest.approx(spearman(fo.rewards, exact))
    assert agree["first_order_pearson"] == pytest.approx(pearson(fo.rewards, exact))
    assert agree["loo_spearman"] == pytest.approx(spearman(loo, exact))
    assert agree["loo_pearson"] == pytest.approx(pearson(loo, exact))
    assert "loo_pearson" not in agreement(engine(), examples, exact, 4, "inverse_groups", loo_max_examples=2)
    assert pearson(a, 2 * a - 1) == pytest.approx(1.0)

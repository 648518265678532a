"""Model-aware curation: pass rates, the difficulty band and domain mixtures against hand-computed cases;
k rollouts of a scripted policy scored by the math reward; the curate CLI end to end; the DemyAgent
recipe config and one shrunk GRPO update with it (hermes format, code interpreter, math reward)."""
import json

import numpy as np
import pytest

from atomsearch_jax.data import QARecord
from atomsearch_jax.data.curation import PassRate, in_band, mix, mixture_counts, parse_weights


def record(i, source="math", answer="42"):
    return QARecord(id=f"{source}-{i}", question=f"Problem {i}?", golden_answers=[answer], source=source)


def test_pass_rates_and_band_hand_computed():
    # k = 8: solved 0, 1, 4, 7, 8 times -> rates 0, 0.125, 0.5, 0.875, 1
    rates = [PassRate(record(i), c, 8) for i, c in enumerate([0, 1, 4, 7, 8])]
    assert [r.rate for r in rates] == [0.0, 0.125, 0.5, 0.875, 1.0]
    assert [r.correct for r in in_band(rates, 0.125, 0.875)] == [1, 4, 7]
    assert [r.correct for r in in_band(rates, 0.01, 0.99)] == [1, 4, 7]
    assert [r.correct for r in in_band(rates, 0.5, 0.5)] == [4]
    assert [r.correct for r in in_band(rates, 0.0, 1.0)] == [0, 1, 4, 7, 8]
    with pytest.raises(ValueError, match="band"):
        in_band(rates, 0.6, 0.4)
    with pytest.raises(ValueError, match="math-0"):
        PassRate(record(0), 9, 8)
    assert rates[2].to_json()["pass_rate"] == 0.5


def test_mixture_counts_hand_computed():
    assert parse_weights("math:3, code:1") == {"math": 3.0, "code": 1.0}
    # 10 split 3:1 -> exact 7.5 / 2.5 -> floors 7 / 2, the remainder tie goes to the first listed domain
    assert mixture_counts({"math": 100, "code": 100}, {"math": 3, "code": 1}, 10) == {"math": 8, "code": 2}
    # 6:3:1 of 20 -> 12 / 6 / 2
    assert mixture_counts({"math": 50, "code": 50, "sci": 50}, {"math": 6, "code": 3, "sci": 1}, 20) == {
        "math": 12, "code": 6, "sci": 2}
    # largest total the pools allow: code has 5 for a 1/4 share -> 20 total (15 + 5)
    assert mixture_counts({"math": 40, "code": 5}, {"math": 3, "code": 1}) == {"math": 15, "code": 5}
    with pytest.raises(ValueError, match="'code'"):
        mixture_counts({"math": 40, "code": 5}, {"math": 3, "code": 1}, 40)
    with pytest.raises(ValueError, match="physics"):
        mixture_counts({"math": 40}, {"physics": 1})
    for bad in ("math", "math:0", "math:x", ":2", "math:1,math:2"):
        with pytest.raises(ValueError):
            parse_weights(bad)


def test_mix_draws_without_replacement_and_is_seeded():
    pools = {"math": [f"m{i}" for i in range(10)], "code": [f"c{i}" for i in range(4)]}
    drawn = mix(pools, {"math": 1, "code": 1}, 8, seed=3)
    assert sorted(x[0] for x in drawn) == ["c"] * 4 + ["m"] * 4 and len(set(drawn)) == 8
    assert drawn == mix(pools, {"math": 1, "code": 1}, 8, seed=3)
    assert drawn != mix(pools, {"math": 1, "code": 1}, 8, seed=4)


@pytest.fixture(scope="module")
def boxed_policy(tmp_path_factory):
    """An HF checkpoint + tokenizer of a bigram policy that answers every question with \\boxed{42}."""
    from test_agent import bigram_params, single_token
    from transformers import AutoTokenizer

    from atomsearch_jax.data.world import WorldConfig, build_world, train_tokenizer
    from atomsearch_jax.formats import HermesFormat
    from atomsearch_jax.model import save_hf_checkpoint

    tok = AutoTokenizer.from_pretrained(train_tokenizer(build_world(WorldConfig(seed=0)), tmp_path_factory.mktemp("tok")))
    tok.add_tokens(["\\boxed{42}"])
    prompt = tok.encode(HermesFormat().prompt_text("Problem 0?", tok), add_special_tokens=False)
    # Sharp enough that sampling at temperature 1 is deterministic.
    cfg, params = bigram_params(tok, {prompt[-1]: single_token(tok, "\\boxed{42}")}, sharpness=100.0)
    path = tmp_path_factory.mktemp("policy")
    save_hf_checkpoint(cfg, params, path)
    tok.save_pretrained(path)
    return path, tok, cfg, params


def test_rollout_pass_rates_with_a_scripted_policy(boxed_policy):
    from atomsearch_jax.agent import RolloutConfig, RolloutRunner
    from atomsearch_jax.agent.pass_rates import rollout_pass_rates
    from atomsearch_jax.formats import HermesFormat
    from atomsearch_jax.generate import Engine
    from atomsearch_jax.rewards import math_reward

    _, tok, cfg, params = boxed_policy
    runner = RolloutRunner(Engine(cfg, params, max_len=512, tokenizer=tok), tok, HermesFormat(), None,
                           RolloutConfig(max_response_tokens=32))
    records = [record(0, answer="42"), record(1, answer="41"), record(2, answer="84/2")]
    rates = rollout_pass_rates(runner, records, k=3, temperature=1.0, outcome=math_reward, rows_per_batch=4)
    assert [(r.record.id, r.correct, r.k) for r in rates] == [("math-0", 3, 3), ("math-1", 0, 3), ("math-2", 3, 3)]
    assert rates[1].answers == ("42", "42", "42")


@pytest.mark.slow
def test_curate_cli_writes_pass_rates_band_and_mixture(boxed_policy, tmp_path):
    from cli_helpers import run_cli

    from atomsearch_jax.data import load_qa_file
    from atomsearch_jax.tools import probe

    path, *_ = boxed_policy
    math_file, sci_file = tmp_path / "aime.jsonl", tmp_path / "sci.jsonl"
    math_file.write_text(json.dumps({"id": "a1", "problem": "Problem 0?", "answer": 42}) + "\n"
                         + json.dumps({"id": "a2", "problem": "Problem 1?", "answer": "41"}) + "\n")
    sci_file.write_text(json.dumps({"question": "Problem 2?", "answer": "42.0"}) + "\n")
    out = tmp_path / "out"
    result = run_cli("curate", *[
        "--config=configs/default.py", "--config.format=hermes", "--config.data.source=files",
        f"--config.model.hf_path={path}", "--config.model.max_len=512", "--config.rl.rollout.max_response_tokens=32",
        "--config.rl.reward.outcome=math", "--config.rl.rollout.temperature=1.0",
        f"--config.code_interpreter.allow_unsandboxed={not probe().sandboxed}",
        f"--qa_files=math={math_file},science={sci_file}", "--k=2", "--min_pass_rate=0.5", "--max_pass_rate=1.0",
        "--mixture=math:1,science:1", f"--out_dir={out}", f"--workdir={tmp_path / 'work'}"])
    assert "RESULT curate problems=3 in_band=2 chosen=2" in result.stdout, result.stdout + result.stderr
    rates = [json.loads(line) for line in (out / "pass_rates.jsonl").read_text().splitlines()]
    assert [(r["id"], r["source"], r["correct"], r["pass_rate"]) for r in rates] == [
        ("a1", "math", 2, 1.0), ("a2", "math", 0, 0.0), ("sci-0", "science", 2, 1.0)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["domains"]["math"]["solved_histogram"] == [1, 0, 1]
    assert summary["domains"]["science"] == {"problems": 1, "mean_pass_rate": 1.0, "solved_histogram": [0, 0, 1],
                                             "in_band": 1, "chosen": 1}
    curated = load_qa_file(out / "curated.jsonl")
    assert sorted(r.id for r in curated) == ["a1", "sci-0"]
    assert all(r.metadata["pass_rate"] == 1.0 for r in curated)


def test_demyagent_config_carries_the_seed_recipe():
    import importlib

    c = importlib.import_module("configs.demyagent_code").get_config()
    assert (c.format, c.prompt_version, c.rl.reward.outcome, c.rl.reward.judge) == (
        "hermes", "hermes_code_v1", "math", "none")
    assert (c.rl.loss.eps_low, c.rl.loss.eps_high, c.rl.loss.kl_coef, c.rl.loss.agg_mode) == (
        0.2, 0.315, 0.0, "token-mean")  # GRPO-TCR (seed 002): token-level loss, clip-higher 0.315, no KL
    assert (c.rl.reward.overlong.max_length, c.rl.reward.overlong.cache_length) == (20480, 4096)
    assert (c.rl.prompts_per_step, c.rl.group_size, c.rl.optimizer.learning_rate) == (64, 16, 1e-6)
    assert c.rl.dynamic_sampling is False and c.rl.rollout.temperature == 1.0 and c.eval.n == 32


@pytest.mark.slow
def test_demyagent_recipe_trains_one_shrunk_update(boxed_policy, tmp_path):
    from cli_helpers import run_cli

    from atomsearch_jax.tools import probe

    path, *_ = boxed_policy
    problems = tmp_path / "aime.jsonl"
    problems.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"Problem {i}?", "answer": a}) + "\n"
                                for i, a in enumerate([42, 41])))
    workdir = tmp_path / "run"
    run_cli("train", *[
        "--config=configs/demyagent_code.py", f"--workdir={workdir}", f"--config.model.hf_path={path}",
        "--config.model.dtype=float32", "--config.model.max_len=512", f"--config.data.train_files={problems}",
        f"--config.data.eval_files={problems}", "--config.rl.steps=1", "--config.rl.prompts_per_step=2",
        "--config.rl.group_size=2", "--config.rl.train_step.micro_batch_size=0",
        "--config.rl.rollout.max_response_tokens=32", "--config.rl.rollout.segment_steps=16",
        "--config.eval.n=2", "--config.eval.every=0", "--config.export_hf=False",
        f"--config.code_interpreter.allow_unsandboxed={not probe().sandboxed}"])
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["format"] == "hermes"
    # The scripted policy answers 42 to both problems: one right (+1), one wrong.
    assert summary["eval_initial"]["em"] == pytest.approx(0.5)

"""Outcome rewards, overlong shaping, RRM prompt and score parsing, ATR, curriculum and the reward manager."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atomsearch_jax.formats import AtomicThought, get_format
from atomsearch_jax.rewards import (
    OUTCOME_REWARDS,
    FunctionJudge,
    GradeRequest,
    GradeResult,
    Judge,
    RewardInput,
    RewardManager,
    aggregate_atr,
    build_grading_messages,
    get_outcome_reward,
    make_schedule,
    overlong_penalty,
    parse_scores,
    reward_metrics,
)

DOC = {"id": "d", "contents": '"Paris"\nParis is the capital of France.'}


def trajectory(name: str, answer: str = "Paris") -> str:
    fmt = get_format(name)
    return (fmt.render_turn([("PLAN", "find the capital"), ("ACTION", "search")], queries=["capital of France"])
            + fmt.render_results([[DOC]]) + fmt.render_turn([("VERIFICATION", "the doc says Paris")], answer=answer))


# ---------------------------------------------------------------------------------------------- outcome
def test_registry():
    assert sorted(OUTCOME_REWARDS) == ["deepresearcher", "math", "research", "search_r1_em", "search_r1_format"]
    with pytest.raises(ValueError, match="deepresearcher"):
        get_outcome_reward("nope")


def test_research_reward():
    fmt, reward = get_format("research"), get_outcome_reward("research")
    assert reward(trajectory("research"), ["Paris"], fmt).score == 1.0
    partial = reward(trajectory("research", "Paris France"), ["Paris"], fmt)
    assert partial.score == pytest.approx(2 / 3) and partial.format_ok and partial.em == 0.0
    wrong = reward(trajectory("research", "Lyon"), ["Paris"], fmt)
    assert wrong.score == 0.1 and wrong.reason == "wrong answer, good format"
    assert reward(trajectory("research", "no"), ["no way"], fmt).score == 0.1  # yes/no rule
    assert reward(trajectory("research"), ["Paris"], fmt, truncated=True).score == 0.0
    broken = reward(trajectory("research").replace("</think>", "", 1), ["Paris"], fmt)
    assert broken.score == 0.0 and not broken.format_ok and "unbalanced <think>" in broken.reason


def test_deepresearcher_reward():
    fmt, reward = get_format("atom_searcher"), get_outcome_reward("deepresearcher")
    assert reward(trajectory("atom_searcher"), ["Paris"], fmt).score == 1.0
    assert reward(trajectory("atom_searcher", "paris paris"), ["Paris"], fmt).score == 1.0  # set F1
    assert reward(trajectory("atom_searcher", "Lyon"), ["Paris"], fmt).score == 0.0
    no_answer = trajectory("atom_searcher").rsplit("<answer>", 1)[0]
    result = reward(no_answer, ["Paris"], fmt)
    assert result.score == -1.0 and result.reason == "no answer"
    assert reward(trajectory("atom_searcher"), ["Paris"], fmt, truncated=True).score == -1.0
    assert get_outcome_reward("deepresearcher", format_penalty=-0.5)(no_answer, ["Paris"], fmt).score == -0.5


@pytest.mark.parametrize(
    "answer, valid, expected",
    [("Paris", True, 1.0), ("Paris", False, 0.8), ("Lyon", True, 0.2), ("Lyon", False, 0.1), (None, False, 0.0)],
)
def test_search_r1_format_reward(answer, valid, expected):
    fmt = get_format("search_r1")
    if answer is None:  # without an answer a Search-R1 response is never valid
        response = trajectory("search_r1").rsplit("<answer>", 1)[0]
    else:
        response = trajectory("search_r1", answer) if valid else "junk " + trajectory("search_r1", answer)
    result = get_outcome_reward("search_r1_format")(response, ["Paris"], fmt)
    assert result.score == pytest.approx(expected)
    assert get_outcome_reward("search_r1_em")(response, ["Paris"], fmt).score == float(answer == "Paris")


def test_overlong_penalty_dapo():
    assert overlong_penalty(16384, 20480, 4096) == 0.0
    assert overlong_penalty(18432, 20480, 4096) == pytest.approx(-0.5)
    assert overlong_penalty(20480, 20480, 4096) == pytest.approx(-1.0)
    assert overlong_penalty(30000, 20480, 4096) == -1.0
    with pytest.raises(ValueError):
        overlong_penalty(1, 10, 20)


# ---------------------------------------------------------------------------------------------- RRM prompt + parser
THOUGHTS = (AtomicThought("PLAN", "find the capital", 0), AtomicThought("OBSERVATION", "doc says Paris", 1),
            AtomicThought("VERIFICATION", "consistent", 1))


def test_grading_messages():
    msgs = build_grading_messages("Capital of France?", THOUGHTS, golden_answers=["Paris"], trajectory="x" * 100)
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    assert "[2] (turn 1, OBSERVATION) doc says Paris" in user and "Reference answer(s): Paris" in user
    assert '"scores"' in msgs[0]["content"]
    hidden = build_grading_messages("q?", THOUGHTS, golden_answers=["Paris"], show_gold=False,
                                    trajectory="a" * 50 + "b" * 50, max_trajectory_chars=20)[1]["content"]
    assert "Reference answer" not in hidden and "omitted" in hidden and "a" * 11 not in hidden
    with pytest.raises(ValueError, match="rrm_v1"):
        build_grading_messages("q", THOUGHTS, version="rrm_v0")


MESSY = [
    ('{"scores": [{"id": 1, "score": 8, "reason": "ok"}, {"id": 2, "score": 10, "reason": "x"}, '
     '{"id": 3, "score": 3, "reason": "y"}]}', [0.8, 1.0, 0.3]),
    ('<think>Let me check each thought. {"draft": 1}</think>\nHere you go:\n```json\n'
     '{"scores": [{"id": 3, "score": "3/10"}, {"id": 1, "score": 8.5}, {"id": 2, "score": 12}]}\n```\nDone.',
     [0.85, 1.0, 0.3]),
    ("Scores: [8, 6, -2] as requested", [0.8, 0.6, 0.0]),
    ('{"1": 7, "2": "9", "3": 5}', [0.7, 0.9, 0.5]),
    ('{"scores": [{"thought": "[1]", "rating": 4}, {"thought": "[2]", "rating": 6}, {"thought": "[9]", "rating": 1}, '
     '{"thought": "[1]", "rating": 9}]}', [0.4, 0.6, None]),
    ("Thought 1: 8/10 good\nThought 2: 5/10\nThought 3: 10/10", [0.8, 0.5, 1.0]),
    ('reasoning ends here</think>{"scores": [1, 2, 3]}', [0.1, 0.2, 0.3]),
]


@pytest.mark.parametrize("text, expected", MESSY)
def test_parse_scores_messy(text, expected):
    parsed = parse_scores(text, 3)
    assert parsed.error is None
    assert parsed.scores == pytest.approx(expected) if None not in expected else parsed.scores == [0.4, 0.6, None]


@pytest.mark.parametrize(
    "text, error",
    [("", "empty"), ("I cannot grade this.", "unparseable"), ('{"scores": [{"id": 1, "score": 5}]}', "scored 1 of 3"),
     ('{"scores": [{"id": 1, "score": NaN}]}', "unparseable")],
)
def test_parse_scores_failures(text, error):
    parsed = parse_scores(text, 3)
    assert parsed.scores is None and error in parsed.error


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.integers(0, 6))
def test_parse_scores_never_raises(text, n):
    parsed = parse_scores(text, n)
    assert (parsed.scores is None) != (parsed.error is None)
    if parsed.scores is not None:
        assert len(parsed.scores) == n and all(s is None or 0.0 <= s <= 1.0 for s in parsed.scores)


# ---------------------------------------------------------------------------------------------- ATR
def test_aggregate_atr_modes():
    thoughts = [AtomicThought("PLAN", "one two three", 0), AtomicThought("ACTION", "go", 0),
                AtomicThought("PLAN", "x", 1)]
    scores = [1.0, 0.0, None]
    assert aggregate_atr(scores, thoughts) == 0.5
    assert aggregate_atr(scores, thoughts, "min") == 0.0
    assert aggregate_atr(scores, thoughts, "weighted") == pytest.approx(3 / 4)  # word-count weights 3 and 1
    assert aggregate_atr(scores, thoughts, "weighted", {"plan": 1.0, "ACTION": 3.0}) == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="no scored thought"):
        aggregate_atr([None], thoughts[:1])
    with pytest.raises(ValueError, match="mean"):
        aggregate_atr(scores, thoughts, "median")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        aggregate_atr([2.0, 0.0, 0.0], thoughts)


# ---------------------------------------------------------------------------------------------- curriculum
@pytest.mark.parametrize("step, alpha", [(0, 0.5), (50, 0.25), (100, 0.0), (150, 0.0), (-5, 0.5)])
def test_linear_schedule(step, alpha):
    assert make_schedule("linear", total_steps=100)(step) == pytest.approx(alpha)


def test_other_schedules():
    assert make_schedule("cosine", total_steps=10)(5) == pytest.approx(0.25)
    assert make_schedule("constant", total_steps=10, alpha0=0.3)(7) == 0.3
    with pytest.raises(ValueError, match="linear"):
        make_schedule("step", total_steps=10)
    with pytest.raises(ValueError, match="alpha0"):
        make_schedule("linear", total_steps=10, alpha0=2.0)


# ---------------------------------------------------------------------------------------------- manager
class ConstantJudge(Judge):
    """Scores every thought `value`; fails the requests whose question contains "fail"."""

    def __init__(self, value):
        self.value, self.calls = value, []

    def grade(self, requests):
        self.calls.append(list(requests))
        return [GradeResult(None, "boom", 3) if "fail" in r.question else GradeResult([self.value] * len(r.thoughts))
                for r in requests]


def batch():
    good, wrong = trajectory("atom_searcher"), trajectory("atom_searcher", "Lyon")
    broken = good.replace("</VERIFICATION>", "")
    return [
        RewardInput("Capital of France?", ["Paris"], good, 100),
        RewardInput("Capital of France?", ["Paris"], wrong, 100),
        {"question": "please fail", "golden_answers": ["Paris"], "response": wrong, "generated_tokens": 100},
        RewardInput("Capital of France?", ["Paris"], broken, 100),
    ]


@pytest.mark.parametrize("step, alpha", [(0, 0.5), (50, 0.25), (100, 0.0)])
def test_manager_weights_over_training(step, alpha):
    judge = ConstantJudge(0.6)
    manager = RewardManager(get_format("atom_searcher"), judge=judge, total_steps=100)
    rewards, comp = manager.score(batch(), step)
    assert rewards.dtype == np.float32 and rewards.shape == (4,)
    np.testing.assert_allclose(comp["alpha"], alpha)
    np.testing.assert_allclose(comp["outcome"], [1.0, 0.0, 0.0, -1.0])
    expected = [alpha * 0.6 + (1 - alpha) * 1.0, alpha * 0.6, 0.0, -1.0]  # fallback, then format penalty
    np.testing.assert_allclose(rewards, expected, rtol=1e-6)
    if alpha > 0:
        np.testing.assert_array_equal(comp["judge_failed"], [0, 0, 1, 0])
        np.testing.assert_array_equal(comp["judge_used"], [1, 1, 1, 0])  # malformed sample never sent
        assert comp["judge_error"] == [None, None, "boom", None]
        assert np.isnan(comp["atr"][2]) and np.isnan(comp["atr"][3]) and comp["atr"][0] == pytest.approx(0.6)
        assert [len(r.thoughts) for r in judge.calls[0]] == [3, 3, 3]
        assert "<tool_response>" in judge.calls[0][0].trajectory
    else:
        assert judge.calls == []  # alpha = 0: no judge calls
    np.testing.assert_array_equal(comp["format_ok"], [1, 1, 1, 0])
    np.testing.assert_array_equal(comp["em"], [1, 0, 0, 1])


def test_manager_malformed_mix_policy_and_overlong():
    manager = RewardManager(get_format("atom_searcher"), judge=ConstantJudge(1.0), total_steps=100,
                            malformed_policy="mix", overlong=(110, 20))
    rewards, comp = manager.score(batch(), 0)
    assert comp["judge_used"][3] == 1.0 and comp["atr"][3] == pytest.approx(1.0)
    penalty = (90 - 100) / 20
    np.testing.assert_allclose(rewards, np.array([1.0, 0.5, 0.0, 0.0]) + penalty, rtol=1e-6)
    np.testing.assert_allclose(comp["overlong"], penalty)
    metrics = reward_metrics(comp)
    assert metrics["reward/judge_failures"] == 1.0 and math.isclose(metrics["reward/alpha_mean"], 0.5)


def test_manager_with_function_judge_and_research_outcome():
    def score_fn(question, thoughts, golds):
        return [1.0 if golds[0] in t.text else 0.0 for t in thoughts]

    manager = RewardManager(get_format("research"), outcome="research", judge=FunctionJudge(score_fn),
                            schedule="constant", alpha0=0.5)
    rewards, comp = manager.score([RewardInput("q?", ["Paris"], trajectory("research"))], 3)
    # research format: thoughts are the 2 think blocks; only the second mentions Paris -> ATR 0.5.
    assert comp["n_thoughts"][0] == 2 and comp["atr"][0] == pytest.approx(0.5)
    assert rewards[0] == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)


def test_manager_no_thoughts_and_bad_inputs():
    fmt = get_format("search_r1")
    response = "<think> </think>\n<answer> Paris </answer>"
    judge = ConstantJudge(1.0)
    manager = RewardManager(fmt, outcome="search_r1_em", judge=judge, schedule="constant")
    rewards, comp = manager.score([RewardInput("q", ["Paris"], response)], 0)
    assert comp["atr"][0] == 0.0 and rewards[0] == pytest.approx(0.5) and judge.calls == []
    with pytest.raises(ValueError, match="sample 1 lacks"):
        manager.score([RewardInput("q", ["Paris"], response), {"question": "q"}], 0)
    with pytest.raises(ValueError, match="sample 0 needs a non-empty list"):
        manager.score([{"question": "q", "golden_answers": [], "response": "x"}], 0)
    with pytest.raises(ValueError, match="malformed_policy"):
        RewardManager(fmt, malformed_policy="ignore")


def test_function_judge_failures_are_recorded():
    def flaky(question, thoughts, golds):
        if question == "raise":
            raise RuntimeError("oracle down")
        if question == "short":
            return [1.0]
        return [1.5] * len(thoughts)

    results = FunctionJudge(flaky).grade([GradeRequest(q, THOUGHTS) for q in ("raise", "short", "range")])
    assert [r.ok for r in results] == [False, False, False]
    assert "RuntimeError: oracle down" in results[0].error
    assert "1 scores for 3 thoughts" in results[1].error and "outside [0, 1]" in results[2].error
    ok = FunctionJudge(lambda q, t, g: [0.25] * len(t)).grade([GradeRequest("q", THOUGHTS)])[0]
    assert ok.ok and ok.scores == [0.25] * 3
    with pytest.raises(TypeError):
        FunctionJudge("not callable")


def test_reply_json_shape_matches_prompt():
    # The example shape stated in the prompt parses with the parser.
    system = build_grading_messages("q", THOUGHTS)[0]["content"]
    line = next(line for line in system.splitlines() if line.startswith('{"scores"'))
    example = line.replace("<integer 0-10>", "7").replace("<one short sentence>", "fine").replace(", ...", "")
    assert json.loads(example)["scores"][0]["score"] == 7
    assert parse_scores(example, 1).scores == [0.7]


def test_reward_metrics_count_groups_with_contrast():
    # 3 groups of 2: outcome differs in group 0; reward differs in groups 0 and 1 (process reward only in 1)
    comp = {"reward": np.array([1.0, 0.1, 0.3, 0.2, 0.5, 0.5]), "outcome": np.array([1.0, 0.0, 0.0, 0.0, 0.5, 0.5]),
            "judge_failed": np.zeros(6)}
    metrics = reward_metrics(comp, group_size=2)
    assert metrics["reward/contrast_groups_frac"] == pytest.approx(2 / 3)
    assert metrics["reward/outcome_contrast_groups_frac"] == pytest.approx(1 / 3)
    assert "reward/contrast_groups_frac" not in reward_metrics(comp)
    with pytest.raises(ValueError, match="whole groups of 4"):
        reward_metrics(comp, group_size=4)

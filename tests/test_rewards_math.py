"""Math reward: last \\boxed{} with nested braces, normalisation, numeric equality, +/-1 (hand-computed)."""
import pytest

from atomsearch_jax.rewards import OUTCOME_REWARDS, answers_match, last_boxed, math_reward, normalize_math_answer


@pytest.mark.parametrize("text,expected", [
    (r"so \boxed{42}.", "42"),
    (r"first \boxed{1} then \boxed{2}", "2"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{\left\{ x \mid x^{2} > 1 \right\}}", r"\left\{ x \mid x^{2} > 1 \right\}"),
    (r"\boxed{a_{1}} and cut off \boxed{3", None),  # a truncated final box is no answer
    (r"answer: \boxed 7 done", "7"),
    (r"\fbox{9} then \boxed{10}", "10"),
    (r"\boxed{10} then \fbox{9}", "9"),
    ("no box here", None),
    (r"\boxed{", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("raw,normalized", [
    (r"\dfrac{3}{4}", r"\frac{3}{4}"),
    (r"\tfrac12", r"\frac{1}{2}"),
    (r"\frac1{x}", r"\frac{1}{x}"),
    ("1,000,000", "1000000"),
    (r"12\text{ cm}", "12"),
    ("5 meters", "5"),
    (r"90^\circ", "90"),
    (r"50\%", "50"),
    (r"\$18.50", "18.50"),
    ("x = 5", "5"),
    (r"\left( 1, 2 \right)", "(1,2)"),
    ("{7}", "7"),
    (r"\text{(B)}", "(B)"),
])
def test_normalization(raw, normalized):
    assert normalize_math_answer(raw) == normalized


@pytest.mark.parametrize("pred,gold,equal", [
    ("0.5", r"\frac{1}{2}", True),
    ("1/2", r"\dfrac12", True),
    ("-3/4", "-0.75", True),
    (r"-\frac{3}{4}", "-0.75", True),
    ("1,024", "1024", True),
    ("2.000", "2", True),
    ("1e3", "1000", True),
    (r"12\text{ inches}", "12", True),
    ("0.3333", r"\frac13", False),  # not within 1e-6
    ("3", "4", False),
    (r"2\sqrt{2}", r"2\sqrt{2}", True),
    (r"\sqrt{8}", r"2\sqrt{2}", False),  # symbolic equivalence is not attempted
    ("", "0", False),
    ("1/0", "0", False),
])
def test_answers_match(pred, gold, equal):
    assert answers_match(pred, gold) is equal


def test_math_reward_plus_minus_one():
    assert OUTCOME_REWARDS["math"] is math_reward
    good = math_reward(r"We compute 3 \cdot 4 = 12, so the answer is \boxed{12}.", ["12"])
    assert (good.score, good.em, good.answer) == (1.0, 1.0, "12")
    # The LAST box counts: an earlier correct box does not rescue a wrong final one.
    assert math_reward(r"\boxed{12} hmm, actually \boxed{13}", ["12"]).score == -1.0
    assert math_reward("the answer is 12", ["12"]).score == -1.0  # no box
    assert math_reward(r"\boxed{12}", ["12"], truncated=True).score == -1.0
    assert math_reward(r"\boxed{\dfrac{6}{8}}", ["3/4", "0.75"]).score == 1.0
    assert math_reward(r"\boxed{2}", ["12"], correct=1.0, incorrect=0.0).score == 0.0

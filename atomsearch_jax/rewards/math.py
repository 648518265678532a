"""Math answer checking: the last `\\boxed{}` of a response, normalised, compared as numbers or as simple LaTeX.

The DAPO / GRPO-TCR reward is +1 for a correct final answer and -1 otherwise (no answer, wrong answer,
truncated response). "Correct" here means, after `normalize_math_answer` on both sides, equal strings or
equal numbers: integers, decimals, fractions (`3/4`, `\\frac{3}{4}`, `\\dfrac34`), thousands separators
(`1,000`), percent signs, degrees, `\\text{...}` units and trailing unit words stripped. Symbolic
equivalence beyond that (e.g. `\\sqrt{8}` vs `2\\sqrt{2}`) is not attempted: both sides are compared as
normalised strings.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Sequence

from atomsearch_jax.formats import AgentFormat
from atomsearch_jax.formats.base import braced_group
from atomsearch_jax.formats.research import last_boxed_content as last_boxed
from atomsearch_jax.rewards.outcome_result import OutcomeResult

def _replace_frac_shorthand(s: str) -> str:
    r"""\frac12 -> \frac{1}{2}, \frac1{x} -> \frac{1}{x}, \frac{a}b -> \frac{a}{b}."""
    def arg(t: str, i: int) -> tuple[str, int]:
        if i < len(t) and t[i] == "{":
            group = braced_group(t, i)
            if group is not None:
                return group[0], group[1]
        return (t[i], i + 1) if i < len(t) else ("", i)

    out, i = [], 0
    while True:
        j = s.find("\\frac", i)
        if j < 0:
            out.append(s[i:])
            return "".join(out)
        out.append(s[i:j])
        num, k = arg(s, j + 5)
        den, k = arg(s, k)
        out.append(f"\\frac{{{num}}}{{{den}}}")
        i = k


_UNIT_TEXT = re.compile(r"\\(?:text|textbf|mbox|mathrm)\{[^{}]*\}")
_TRAILING_WORDS = re.compile(r"^(.*?\d)\s*(?:[a-zA-Z]+\s*)+\.?$")


def normalize_math_answer(answer: str) -> str:
    """A canonical string for a short math answer (see the module docstring for what is stripped)."""
    s = answer.strip()
    s = s.replace("\n", " ").replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", " ")
    s = re.sub(r"\\(?:left|right)\b", "", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\displaystyle", "")
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s).replace("°", "")
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    s = _UNIT_TEXT.sub(lambda m: m.group(0) if not re.search(r"\d", s[: m.start()]) else "", s)
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)  # a \text{} that is the answer itself
    s = re.sub(r"^\s*[a-zA-Z]\s*=\s*", "", s)  # "x = 5" -> "5"
    m = _TRAILING_WORDS.match(s.strip())
    if m:
        s = m.group(1)
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)  # thousands separators
    s = _replace_frac_shorthand(s)
    s = s.replace(" ", "").rstrip(".")
    if s.startswith("{") and s.endswith("}") and braced_group(s, 0) == (s[1:-1], len(s)):
        s = s[1:-1]
    return s


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def to_number(normalized: str) -> Fraction | None:
    r"""The exact value of a normalised answer that is a number, `a/b` or `\frac{a}{b}` (signs allowed),
    else None."""
    s = normalized
    sign = 1
    while s[:1] in "+-" and s:
        sign, s = (-sign if s[0] == "-" else sign), s[1:]
    m = re.fullmatch(r"\\frac\{(.+)\}\{(.+)\}", s)
    parts = (m.group(1), m.group(2)) if m else tuple(s.split("/")) if s.count("/") == 1 else (s,)
    values = []
    for part in parts:
        part = part.strip("{}")
        if not _NUMBER.fullmatch(part):
            return None
        values.append(Fraction(part))
    if len(values) == 2:
        if values[1] == 0:
            return None
        return sign * values[0] / values[1]
    return sign * values[0]


def answers_match(predicted: str, gold: str, *, rel_tol: float = 1e-6) -> bool:
    """Equal after normalisation: as numbers (relative tolerance `rel_tol`) when both parse, else as strings."""
    p, g = normalize_math_answer(predicted), normalize_math_answer(gold)
    if not p:
        return False
    pn, gn = to_number(p), to_number(g)
    if pn is not None and gn is not None:
        return abs(pn - gn) <= rel_tol * max(abs(gn), Fraction(1))
    return p == g


def extract_math_answer(response: str, fmt: AgentFormat | None = None) -> str | None:
    """The last `\\boxed{}` of the format's final answer when it has one, else of the whole response
    (the environment's tool responses excluded by the format when it can), else the format's answer."""
    answer = fmt.extract_answer(response) if fmt is not None else None
    boxed = last_boxed(answer) if answer else None
    if boxed is None and (fmt is None or answer is None):
        boxed = last_boxed(response)
    return boxed if boxed is not None else answer


def math_reward(response: str, golden_answers: Sequence[str], fmt: AgentFormat | None = None, *,
                truncated: bool = False, correct: float = 1.0, incorrect: float = -1.0) -> OutcomeResult:
    """DAPO / GRPO-TCR: `correct` (+1) when the final boxed answer matches any gold answer, else
    `incorrect` (-1) -- also for a truncated response or one without an answer."""
    answer = extract_math_answer(response, fmt)
    report_errors = list(fmt.validate(response).errors) if fmt is not None else []
    format_ok = not report_errors and not truncated
    if truncated:
        return OutcomeResult(incorrect, False, answer, 0.0, 0.0, "truncated")
    if answer is None:
        return OutcomeResult(incorrect, format_ok, None, 0.0, 0.0, "no answer")
    hit = any(answers_match(answer, gold) for gold in golden_answers)
    return OutcomeResult(correct if hit else incorrect, format_ok, answer, float(hit), float(hit),
                         "correct" if hit else "wrong answer")

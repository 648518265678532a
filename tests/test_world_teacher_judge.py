"""Teacher trajectories over real BM25 search, and the oracle judge on teacher vs corrupted trajectories."""
import random
import statistics
from types import SimpleNamespace

import pytest

from atomsearch_jax.data.world.corruptions import hallucinated_chain, wrong_bridge_chain
from atomsearch_jax.data.world.measure import teacher_query_hit_rate
from atomsearch_jax.data.world.oracle import OracleJudge
from atomsearch_jax.data.world.teacher import (TeacherSearchMiss, render_trajectory, teacher_trajectory,
                                               teacher_turns)
from atomsearch_jax.formats import FORMATS, SEARCH_TOOL, AtomicThought, get_format


@pytest.fixture(scope="module")
def world(default_world):
    return default_world


@pytest.fixture(scope="module")
def retriever(default_world_retriever):
    return default_world_retriever


@pytest.fixture(scope="module")
def judge(world):
    return OracleJudge(world)


def test_bm25_finds_the_needed_document_for_teacher_queries(world, retriever):
    assert teacher_query_hit_rate(world, retriever, topk=3) >= 0.9
    assert teacher_query_hit_rate(world, retriever, topk=1) >= 0.9


# The world teacher writes search trajectories: every format that offers search by default.
SEARCH_FORMATS = sorted(n for n in FORMATS if SEARCH_TOOL in get_format(n).tools)


@pytest.mark.parametrize("format_name", SEARCH_FORMATS)
def test_teacher_trajectories_are_valid_in_every_format(world, retriever, format_name):
    fmt = get_format(format_name)
    for record in world.splits["train"][::6]:
        text = teacher_trajectory(record, fmt, retriever)
        report = fmt.validate(text)
        assert report.ok, (record.id, report.errors, text)
        assert fmt.extract_answer(text) == record.golden_answers[0]
        chain = record.metadata["chain"]
        # one search per hop, each naming the hop's head entity, and the results the format renders
        segments, calls = text, []
        for hop in chain:
            call = next(fmt.parse_tool_call(segments[:end]) for end in _stop_positions(segments, fmt)
                        if fmt.parse_tool_call(segments[:end]) is not None)
            calls.append(call.queries)
            assert hop["head"] in call.queries[0]
            segments = segments[segments.index(call.raw) + len(call.raw):]
        assert len(calls) == len(chain)


def _stop_positions(text, fmt):
    for stop in fmt.stop_strings:
        start = 0
        while (i := text.find(stop, start)) >= 0:
            yield i + len(stop)
            start = i + 1


def test_teacher_atomic_thoughts_plan_search_read_verify(world, retriever):
    fmt = get_format("atom_searcher")
    record = next(r for r in world.splits["train"] if r.metadata["hops"] == 3)
    thoughts = fmt.atomic_thoughts(teacher_trajectory(record, fmt, retriever))
    tags = [t.tag for t in thoughts]
    assert tags == ["PLAN", "ACTION", "OBSERVATION", "PLAN", "ACTION", "OBSERVATION", "PLAN", "ACTION",
                    "OBSERVATION", "VERIFICATION"]
    assert [t.turn for t in thoughts] == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    assert thoughts[-1].text.endswith(f"So the answer is {record.golden_answers[0]}.")


class _ScriptedRetriever:
    """Serves scripted results per call (a list of doc lists, or an error string)."""

    def __init__(self, script):
        self.script, self.queries = list(script), []

    def search(self, queries, topk):
        self.queries.append(queries[0])
        item = self.script.pop(0)
        if isinstance(item, str):
            return [SimpleNamespace(docs=[], error=item)]
        return [SimpleNamespace(docs=item[:topk], error=None)]


def test_teacher_retries_a_missed_hop_then_gives_up(world):
    record = next(r for r in world.splits["train"] if r.metadata["hops"] == 2)
    chain = record.metadata["chain"]
    doc = {d["id"]: d for d in world.corpus}
    wrong = [world.corpus[-1]]
    scripted = _ScriptedRetriever([wrong, [doc[chain[0]["doc_id"]]], "timeout", [doc[chain[1]["doc_id"]]]])
    turns = teacher_turns(record, scripted)
    assert len(turns) == 5 and scripted.queries[0] != scripted.queries[1]
    assert turns[1].thoughts[0][0] == "REFLECTION" and chain[0]["head"] in scripted.queries[1]
    text = render_trajectory(turns, get_format("search_r1"))
    assert get_format("search_r1").validate(text).ok and text.count("<search>") == 4
    with pytest.raises(TeacherSearchMiss, match=f"{record.id}: no search returned {chain[0]['doc_id']}"):
        teacher_turns(record, _ScriptedRetriever([wrong, wrong]))


@pytest.mark.parametrize("format_name", ["atom_searcher", "search_r1"])
def test_judge_scores_teacher_high_and_corrupted_low(world, retriever, judge, format_name):
    fmt = get_format(format_name)
    rng = random.Random(0)
    means = {"teacher": [], "wrong_bridge": [], "hallucinated": []}
    for record in world.records()[::4]:
        teacher_text = teacher_trajectory(record, fmt, retriever)
        teacher = fmt.atomic_thoughts(teacher_text)
        scores = judge.score(record.question, teacher, record.golden_answers)
        assert min(scores) >= 0.8, [(t.text, s) for t, s in zip(teacher, scores)]
        means["teacher"].append(statistics.fmean(scores))
        for kind, chain in (("wrong_bridge", wrong_bridge_chain(world, record, rng)),
                            ("hallucinated", hallucinated_chain(world, record, rng,
                                                                hop=rng.randrange(record.metadata["hops"])))):
            text = render_trajectory(teacher_turns(record, retriever, chain=chain), fmt)
            thoughts = fmt.atomic_thoughts(text)
            scores = judge.score(record.question, thoughts, record.golden_answers)
            # every thought that departs from the teacher's is judged low; the false step scores 0
            changed = [s for t, s in zip(thoughts, scores) if t.text not in {u.text for u in teacher}]
            assert changed and max(changed) <= 0.3 and min(scores) == 0.0, (kind, record.id)
            means[kind].append(statistics.fmean(scores))
    assert statistics.fmean(means["teacher"]) == 1.0
    assert statistics.fmean(means["wrong_bridge"]) <= 0.5
    assert statistics.fmean(means["hallucinated"]) <= 0.75


def test_judge_reads_claims_from_free_text(world, judge):
    record = next(r for r in world.records() if r.metadata["path"][:2] == ["directed_by", "born_in"])
    film, person, city = (record.metadata["chain"][0]["head"], record.metadata["chain"][0]["tail"],
                          record.metadata["chain"][1]["tail"])
    twin = next(t for t in world.graph.twins if world.graph.entities[t].type == "person" and t != person)
    other_city = next(c for c in world.graph.of_type("city") if c != city)
    golden = record.golden_answers
    cases = [
        (f"I think {film} was directed by {person}.", 1.0),
        (f"{person} was born in {other_city}.", 0.0),           # hallucinated fact
        (f"The director of {film} is {twin}.", 0.0),             # wrong bridge
        (f"Next I need the birthplace of {person}.", 1.0),       # sensible plan about the chain
        (f"Let me look up {twin} instead.", 0.2),                # pursuing an off-chain entity
        (f"{twin} was born in {world.graph.tail(twin, 'born_in')}.", 0.3),  # true but irrelevant
        ("Let me think step by step.", 0.5),
        (f"So the answer is {golden[0]}.", 1.0),
        (f"So the answer is {other_city}.", 0.0),
    ]
    scores = judge.score(record.question, [("T", text) for text, _ in cases], golden)
    assert scores == [expected for _, expected in cases]
    thought = AtomicThought(tag="OBSERVATION", text=f"{film} is a film directed by {person}.", turn=0)
    assert judge.score(record.question, [thought], golden) == [1.0]
    # a question the world does not hold: relevance falls back to what is reachable from its entities
    unknown = f"Which city was the person who directed {film} born in?"
    assert judge.score(unknown, [("P", f"{film} was directed by {person}."), ("P", f"Look up {twin}.")], golden) == [1.0, 0.2]


def test_judge_scores_a_route_that_stops_at_the_bridge_as_a_partial_plan(world, retriever, judge):
    """The first PLAN names the route: leaving out a hop of the question's chain scores SCORE_PARTIAL_PLAN (the
    early-answer teacher's plan); the whole route, later step plans and a plan naming no entity keep theirs."""
    from atomsearch_jax.data.world.oracle import SCORE_GENERIC, SCORE_PARTIAL_PLAN, SCORE_RELEVANT

    fmt = get_format("atom_searcher")
    checked = 0
    for record in world.records()[::5]:
        chain = record.metadata["chain"]
        if len(chain) < 2:
            continue
        whole = fmt.atomic_thoughts(teacher_trajectory(record, fmt, retriever))
        early = fmt.atomic_thoughts(render_trajectory(teacher_turns(record, retriever, chain=chain[:1]), fmt))
        whole_scores = judge.score(record.question, whole, record.golden_answers)
        early_scores = judge.score(record.question, early, record.golden_answers)
        assert whole[0].tag == early[0].tag == "PLAN"
        assert whole_scores[0] == SCORE_RELEVANT and early_scores[0] == SCORE_PARTIAL_PLAN, record.question
        reason = judge.assess_all(record.question, early, record.golden_answers)[0].reason
        assert chain[1]["relation"] in reason
        # Step plans ("Next I need ...") name one hop each and are not routes.
        assert all(s == SCORE_RELEVANT for t, s in zip(whole[1:], whole_scores[1:]) if t.tag == "PLAN")
        question_first = fmt.atomic_thoughts(render_trajectory(teacher_turns(record, retriever, question_query=True), fmt))
        assert judge.score(record.question, question_first[:1], record.golden_answers) == [SCORE_GENERIC]
        checked += 1
    assert checked >= 10

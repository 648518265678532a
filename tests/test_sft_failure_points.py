"""scripts/sft_failure_points.py: a teacher trajectory follows its chain; a wrong name is caught where it appears."""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
import sft_failure_points  # noqa: E402

from atomsearch_jax.data.world import TeacherSearchMiss, render_trajectory, teacher_turns  # noqa: E402
from atomsearch_jax.formats import get_format  # noqa: E402


def _three_hop(default_world, retriever):
    for record in default_world.splits["train"]:
        if record.metadata["hops"] == 3:
            try:
                return record, render_trajectory(teacher_turns(record, retriever, topk=3), get_format("atom_searcher"))
            except TeacherSearchMiss:
                continue
    raise AssertionError("no 3-hop teacher trajectory")


def test_first_failure_finds_the_first_step_off_the_chain(default_world, default_world_retriever):
    record, text = _three_hop(default_world, default_world_retriever)
    chain = record.metadata["chain"]
    first_failure = sft_failure_points.first_failure
    assert first_failure(text, chain, em=1.0) == "correct"
    assert first_failure(text, chain, em=0.0) == "answer"
    assert first_failure(text.replace(chain[0]["head"], "Nobody Known"), chain, em=0.0) == "plan"
    # The second hop's tail first appears in the second observation (queries name heads only).
    second_tail = chain[1]["tail"]
    cut = text.index("<OBSERVATION>", text.index("<OBSERVATION>") + 1)
    broken = text[:cut] + text[cut:].replace(second_tail, "Nowhere", 1)
    assert first_failure(broken, chain, em=0.0) == "observation1"
    query = text.index('"query"')
    assert first_failure(text[:query] + text[query:].replace(chain[0]["head"], "X", 1), chain, 0.0) == "query0"

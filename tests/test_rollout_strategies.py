"""scripts/rollout_strategies.py: counts the two teacher strategies and start-entity plans in rollout samples."""
from __future__ import annotations

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
import rollout_strategies  # noqa: E402

from atomsearch_jax.data.world import render_trajectory, teacher_turns  # noqa: E402
from atomsearch_jax.formats import get_format  # noqa: E402


def test_counts_strategies_and_start_entity_plans(tmp_path, capsys):
    from atomsearch_jax.search import BM25Retriever
    world = rollout_strategies.job_world()
    retriever = BM25Retriever.from_documents(world.corpus)
    fmt = get_format("atom_searcher")
    record = world.splits["validation"][0]
    start = record.metadata["start"]
    entity_first = render_trajectory(teacher_turns(record, retriever, topk=3), fmt)
    question_first = render_trajectory(teacher_turns(record, retriever, topk=3, question_query=True), fmt)
    miscopied = entity_first.replace(start, "Nobody Known", 1)
    rows = [(entity_first, 1.0), (question_first, 0.5), (miscopied, 0.0)]
    (tmp_path / "samples").mkdir()
    with open(tmp_path / "samples" / "grpo_update_0005.jsonl", "w", encoding="utf-8") as f:
        for response, f1 in rows:
            f.write(json.dumps({"question": record.question, "response": response, "components": {"f1": f1}}) + "\n")
    rollout_strategies.main([str(tmp_path)])
    line = capsys.readouterr().out.strip()
    assert line == (f"RESULT rollout_strategies run={tmp_path} update=5 n=3 f1=0.500 plan_names_start=1 "
                    "question_first=1 question_first_f1=0.500 entity_first_f1=0.500")

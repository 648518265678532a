"""Counterfactual teacher trajectories: entity names permuted within each type, consistently everywhere."""
import collections
import random

import pytest

from atomsearch_jax.data.sft_examples import first_turn_example, turns_example
from atomsearch_jax.data.world.counterfactual import EntityRenaming, rename_record, rename_turns
from atomsearch_jax.data.world.relations import RELATIONS
from atomsearch_jax.data.world.teacher import TeacherSearchMiss, render_trajectory, teacher_turns
from atomsearch_jax.formats import get_format


@pytest.fixture(scope="module")
def held_out(default_world):
    return {r.metadata["start"] for split in ("validation", "test") for r in default_world.splits[split]}


def _teacher(default_world, default_world_retriever, n):
    out = []
    for record in default_world.splits["train"]:
        try:
            out.append((record, teacher_turns(record, default_world_retriever, topk=3)))
        except TeacherSearchMiss:
            continue
        if len(out) == n:
            return out
    return out


def test_a_copy_is_the_teacher_trajectory_under_one_same_type_permutation(default_world, default_world_retriever, held_out):
    renaming = EntityRenaming(default_world.graph, keep=held_out)
    fmt = get_format("atom_searcher")
    changed = 0
    for i, (record, turns) in enumerate(_teacher(default_world, default_world_retriever, 40)):
        rename = renaming.sample(random.Random(i))
        copy, copy_turns = rename_record(record, rename, "cf"), rename_turns(turns, rename)
        assert copy.id == f"{record.id}~cf"
        # The same text with names swapped: rendering commutes with renaming.
        assert render_trajectory(copy_turns, fmt) == rename(render_trajectory(turns, fmt))
        chain, new_chain = record.metadata["chain"], copy.metadata["chain"]
        for hop, new in zip(chain, new_chain):
            for key in ("head", "tail"):
                assert default_world.graph.entities[new[key]].type == default_world.graph.entities[hop[key]].type
            # Each renamed hop's fact is stated by the renamed documents the copy retrieved.
            fact = RELATIONS[new["relation"]].fact_sentence(new["head"], new["tail"])
            assert any(fact in doc["contents"] for turn in copy_turns if turn.results
                       for docs in turn.results for doc in docs)
        assert copy.golden_answers == [new_chain[-1]["tail"]] == [copy_turns[-1].answer]
        assert copy.metadata["start"] == new_chain[0]["head"] and copy.metadata["start"] in copy.question
        names = {e for hop in chain for e in (hop["head"], hop["tail"])}
        assert len({rename(n) for n in names}) == len(names)  # a permutation: distinct names stay distinct
        changed += copy.golden_answers != record.golden_answers
    assert changed >= 30  # most copies have a different answer (10 countries, 40 cities, ...)


def test_held_out_start_entities_keep_their_names_and_never_replace_another(default_world, held_out):
    renaming = EntityRenaming(default_world.graph, keep=held_out)
    others = sorted(set(default_world.graph.entities) - held_out)
    assert held_out and others
    for seed in range(30):
        rename = renaming.sample(random.Random(seed))
        assert all(rename(name) == name for name in held_out)
        assert not {rename(name) for name in others} & held_out


def test_counterfactual_facts_contradict_the_world(default_world, default_world_retriever, held_out):
    """A copy's answer is mostly not the default_world's answer to the copy's question: memorising the default_world's
    facts cannot fit the copies, only reading the context can."""
    renaming = EntityRenaming(default_world.graph, keep=held_out)
    compared = contradicted = 0
    for i, (record, turns) in enumerate(_teacher(default_world, default_world_retriever, 60)):
        copy = rename_record(record, renaming.sample(random.Random(100 + i)), "cf")
        real = default_world.record_for(copy.question)
        if real is not None:
            compared += 1
            contradicted += real.golden_answers != copy.golden_answers
    assert compared >= 30 and contradicted / compared >= 0.7


def test_renaming_matches_whole_names_only(default_world):
    renaming = EntityRenaming(default_world.graph)
    rename = renaming.sample(random.Random(0))
    name = sorted(n for n in default_world.graph.entities if " " not in n)[0]
    glued = f"x{name}y"
    assert rename(glued) == glued and rename(f"({name})") == f"({rename(name)})"
    assert renaming.sample(random.Random(0))(name) == rename(name)  # a seed fixes the permutation


def test_a_first_turn_example_is_the_whole_example_up_to_the_first_search_call(default_world, default_world_retriever,
                                                                                  default_world_tokenizer):
    tok, fmt = default_world_tokenizer, get_format("atom_searcher")
    for record, turns in _teacher(default_world, default_world_retriever, 5):
        tokens, mask = first_turn_example(record.question, turns, fmt, tok)
        whole, whole_mask = turns_example(record.question, turns, fmt, tok)
        assert (tokens == whole[: len(tokens)]).all() and (mask == whole_mask[: len(mask)]).all()
        assert whole_mask[len(tokens)] == 0  # the first search's results follow: environment text
        text = tok.decode(tokens[mask > 0])
        assert record.metadata["start"] in text and text.rstrip().endswith("</tool_call>")
        assert mask.sum() == len(tokens) - len(tok.encode(fmt.prompt_text(record.question, tok),
                                                            add_special_tokens=False))


def _default_teacher_examples(world, retriever, tokenizer, **sft_overrides):
    """The default config's SFT examples ({key: (tokens, mask)}) of 60 train questions, and those records by id."""
    from configs.default import get_config
    from atomsearch_jax.experiment import Environment
    from atomsearch_jax.train import _world_teacher_examples
    config = get_config()
    config.sft.update(sft_overrides)
    records = world.splits["train"][:60]
    env = Environment(fmt=get_format("atom_searcher"), tokenizer=tokenizer, retriever=retriever,
                      train_records=records, eval_records=[], heldout_records=[], world=world)
    return _world_teacher_examples(config, env), {r.id: r for r in records}


def _final_answers(examples, by_id, tokenizer):
    """(record, final answer of its teacher trajectory) for the original (not renamed) examples."""
    fmt = get_format("atom_searcher")
    for key, (tokens, mask) in examples.items():
        if "~" not in key:
            yield by_id[key], fmt.extract_answer(tokenizer.decode(tokens[mask.astype(bool)]))


def _on_share(count, total, fraction):
    return {0.0: count == 0, 1.0: count == total, 0.5: 0.3 * total < count < 0.7 * total}[fraction]


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_weak_teacher_answers_the_bridge_on_the_configured_share(default_world, default_world_retriever,
                                                                 default_world_tokenizer, fraction):
    examples, by_id = _default_teacher_examples(default_world, default_world_retriever, default_world_tokenizer,
                                                world_early_answer_fraction=fraction)
    assert len(examples) >= 3 * 50  # the original and its two counterfactual copies
    early = total = 0
    for record, final in _final_answers(examples, by_id, default_world_tokenizer):
        bridge, answer = record.metadata["chain"][0]["tail"], record.golden_answers[0]
        assert final in (bridge, answer), (final, bridge, answer)
        total += 1
        early += final == bridge
    assert _on_share(early, total, fraction), (early, total)


def test_whole_chain_early_teacher_is_the_faithful_one_until_it_answers_the_bridge(default_world,
                                                                                    default_world_retriever):
    """answer_after=1 plans every hop as the faithful teacher does, searches the first, then answers its tail:
    the two trajectories part at the thought after the first observation (VERIFICATION instead of PLAN)."""
    fmt = get_format("atom_searcher")
    multi_hop = [(r, t) for r, t in _teacher(default_world, default_world_retriever, 40) if len(r.metadata["chain"]) > 1]
    assert len(multi_hop) >= 10
    for record, faithful in multi_hop:
        early = teacher_turns(record, default_world_retriever, topk=3, answer_after=1)
        searches = [t for t in faithful if t.queries is not None]
        first_hop_searches = next(i for i, t in enumerate(searches) if i and t.thoughts[0][0] == "OBSERVATION")
        assert early[:first_hop_searches] == faithful[:first_hop_searches]  # same plan (every hop), same searches
        assert early[first_hop_searches].answer == record.metadata["chain"][0]["tail"] != record.golden_answers[0]
        tags = lambda turn: [tag for tag, _ in turn.thoughts]  # noqa: E731
        assert tags(early[first_hop_searches]) == ["OBSERVATION", "VERIFICATION"]
        assert tags(faithful[first_hop_searches])[:2] == ["OBSERVATION", "PLAN"]
        assert early[first_hop_searches].thoughts[0] == faithful[first_hop_searches].thoughts[0]
        rendered = render_trajectory(early, fmt)
        assert rendered.count("<tool_call>") == first_hop_searches
        assert fmt.extract_answer(rendered) == record.metadata["chain"][0]["tail"]
    with pytest.raises(ValueError, match="answer_after=0"):
        teacher_turns(multi_hop[0][0], default_world_retriever, topk=3, answer_after=0)


@pytest.mark.parametrize("plan", ["first_hop", "whole_chain"])
def test_early_answer_plan_names_the_first_hop_or_the_whole_chain(default_world, default_world_retriever,
                                                                  default_world_tokenizer, plan):
    examples, by_id = _default_teacher_examples(default_world, default_world_retriever, default_world_tokenizer,
                                                world_early_answer_fraction=1.0, world_early_answer_plan=plan)
    whole = first = 0
    for key, (tokens, mask) in examples.items():
        if "~" in key or len(by_id[key].metadata["chain"]) < 2:
            continue
        text = default_world_tokenizer.decode(tokens[mask > 0])  # the teacher's turns (the prompt mentions <PLAN>)
        plan_text = text[text.index("<PLAN>"):text.index("</PLAN>")]
        whole += ", then" in plan_text
        first += ", then" not in plan_text
    assert (whole, first) != (0, 0)
    assert (first if plan == "whole_chain" else whole) == 0, (whole, first)
    with pytest.raises(ValueError, match="world_early_answer_plan"):
        _default_teacher_examples(default_world, default_world_retriever, default_world_tokenizer,
                                  world_early_answer_fraction=1.0, world_early_answer_plan="second_hop")


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_sentence_answers_on_the_configured_share_score_below_the_entity(default_world, default_world_retriever,
                                                                         default_world_tokenizer, fraction):
    from atomsearch_jax.rewards.metrics import exact_match, f1_score
    examples, by_id = _default_teacher_examples(default_world, default_world_retriever, default_world_tokenizer,
                                                world_sentence_answer_fraction=fraction, world_early_answer_fraction=0.0)
    sentences = total = 0
    for record, final in _final_answers(examples, by_id, default_world_tokenizer):
        last = record.metadata["chain"][-1]
        sentence = RELATIONS[last["relation"]].fact_sentence(last["head"], last["tail"])
        assert final in (record.golden_answers[0], sentence), (final, sentence)
        if final == sentence:
            # Right, yet the outcome reward prefers the bare entity: that is what GRPO can learn.
            assert exact_match(final, record.golden_answers) == 0.0
            assert 0.0 < f1_score(final, record.golden_answers) <= 0.5
        total += 1
        sentences += final == sentence
    assert _on_share(sentences, total, fraction), (sentences, total)


def test_split_off_starts_moves_whole_start_entities():
    from atomsearch_jax.data.world import build_world
    from atomsearch_jax.data.world.questions import split_off_starts
    records = build_world().splits["train"]
    kept, off = split_off_starts(records, 0.4, random.Random(0))
    assert sorted(r.id for r in kept + off) == sorted(r.id for r in records)
    assert not {r.metadata["start"] for r in kept} & {r.metadata["start"] for r in off}
    assert 0.4 * len(records) <= len(off) < 0.4 * len(records) + 10  # whole entities: at most one over
    assert [r.id for r in split_off_starts(records, 0.4, random.Random(0))[1]] == [r.id for r in off]
    assert split_off_starts(records, 0.0, random.Random(0)) == (records, [])
    with pytest.raises(ValueError, match="fraction"):
        split_off_starts(records, 1.0, random.Random(0))


def test_grpo_only_questions_are_never_in_the_sft_data(tmp_path):
    """data.grpo_only_fraction: GRPO's prompts are about start entities no SFT example (original or
    renamed copy) asks about, and the GRPO prompt pipeline draws only from them."""
    from configs.default import get_config
    from atomsearch_jax.experiment import build_environment
    from atomsearch_jax.train import _world_teacher_examples, prompt_pipeline
    config = get_config()
    config.data.grpo_only_fraction = 0.4
    env = build_environment(config, str(tmp_path))
    grpo_starts = {r.metadata["start"] for r in env.grpo_records}
    assert env.rl_records is env.grpo_records and len(env.grpo_records) >= 0.4 * 501
    assert not grpo_starts & {r.metadata["start"] for r in env.train_records}
    examples = _world_teacher_examples(config, env)
    assert len(examples) >= 3 * 0.9 * len(env.train_records)
    for tokens, mask in examples.values():
        question = env.tokenizer.decode(tokens[: int(mask.argmax())])
        assert not any(f" {start}?" in question for start in grpo_starts), question[-120:]
    batch = next(iter(prompt_pipeline(config, env)))
    grpo_questions = {r.question for r in env.grpo_records}
    assert len(batch) == config.rl.prompts_per_step and all(r.question in grpo_questions for r in batch)
    config.data.grpo_only_fraction = 0.0
    assert build_environment(config, str(tmp_path / "all")).rl_records.__len__() == 501


def test_question_first_teacher_reads_the_first_entity_from_the_results(default_world, default_world_retriever):
    from atomsearch_jax.data.world.oracle import OracleJudge
    from atomsearch_jax.data.world.teacher import QUESTION_PLAN
    judge = OracleJudge(default_world)
    for record, turns in _teacher(default_world, default_world_retriever, 20):
        first = teacher_turns(record, default_world_retriever, topk=3, question_query=True)
        assert first[0].queries == [record.question]
        assert first[0].thoughts[0] == ("PLAN", QUESTION_PLAN)
        # No entity to copy from the question: the plan and the action name none.
        assert not any(judge.mentions(text) for _, text in first[0].thoughts)
        hop = record.metadata["chain"][0]
        assert any(doc["id"] == hop["doc_id"] for doc in first[0].results[0])
        # From the first observation on, the same trajectory as the entity-first teacher's.
        assert first[1:] == turns[1:] and first[-1].answer == record.golden_answers[0]


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_question_first_trajectories_on_the_configured_share(default_world, default_world_retriever,
                                                             default_world_tokenizer, fraction):
    import json
    examples, by_id = _default_teacher_examples(default_world, default_world_retriever, default_world_tokenizer,
                                                world_question_query_fraction=fraction, world_early_answer_fraction=0.0)
    first = total = 0
    for key, (tokens, mask) in examples.items():
        record = by_id[key.split("~")[0]]
        text = default_world_tokenizer.decode(tokens)
        question = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
        searched_question = f'"query": {json.dumps([question])}' in text
        if "~" not in key:
            assert question == record.question
            total += 1
            first += searched_question
        assert searched_question == ("search the question itself" in text), key
    assert _on_share(first, total, fraction), (first, total)


def test_document_rows_cut_the_joined_texts_into_trained_rows(default_world_tokenizer):
    from atomsearch_jax.data.sft_examples import document_rows
    texts = ["Kapizun is a city in the country Pomikmark.", "The capital of Zovomark is Lunar.", "A third one."]
    rows = document_rows(texts, default_world_tokenizer, width=7)
    joined = default_world_tokenizer.encode("".join(t + "\n\n" for t in texts), add_special_tokens=False)
    assert [int(i) for tokens, _ in rows for i in tokens] == joined
    assert all(len(tokens) <= 7 and mask.tolist() == [0.0] + [1.0] * (len(tokens) - 1) for tokens, mask in rows)
    with pytest.raises(ValueError, match="width"):
        document_rows(texts, default_world_tokenizer, width=1)


def test_corpus_rows_name_every_entity_and_hold_no_question(default_world, default_world_retriever,
                                                            default_world_tokenizer):
    from configs.default import get_config
    from atomsearch_jax.experiment import Environment
    from atomsearch_jax.train import _world_corpus_examples
    config = get_config()
    config.sft.world_corpus_passes = 2
    env = Environment(fmt=get_format("atom_searcher"), tokenizer=default_world_tokenizer,
                      retriever=default_world_retriever, train_records=[], eval_records=[], heldout_records=[],
                      world=default_world)
    examples = _world_corpus_examples(config, env)
    passes = [[v for k, v in examples.items() if k.startswith(f"corpus{p}#")] for p in range(2)]
    texts = ["".join(default_world_tokenizer.decode(tokens) for tokens, _ in rows) for rows in passes]
    assert texts[0] != texts[1]  # two shuffles of the same documents
    assert sorted(texts[0].split("\n\n")) == sorted(texts[1].split("\n\n"))
    assert all(name in texts[0] for name in default_world.graph.entities)
    questions = [r.question for split in default_world.splits.values() for r in split]
    assert not any(q in texts[0] for q in questions)
    config.sft.world_corpus_passes = 0
    assert _world_corpus_examples(config, env) == {}


def test_word_level_copies_combine_known_words_into_new_names_and_never_a_kept_one(default_world,
                                                                                  default_world_retriever, held_out):
    from atomsearch_jax.data.world.counterfactual import trajectory_texts
    graph = default_world.graph
    renaming = EntityRenaming(graph, keep=held_out, words=True)
    words_at = collections.defaultdict(set)  # (type, words, position) -> the words any entity has there
    for name, entity in graph.entities.items():
        for i, word in enumerate(name.split()):
            words_at[(entity.type, len(name.split()), i)].add(word)
    fmt = get_format("atom_searcher")
    new_names = raw_collisions = 0
    many = sorted(graph.entities)[::7]  # a wide sample of names for the redraw check below
    for i, (record, turns) in enumerate(_teacher(default_world, default_world_retriever, 40)):
        names = renaming.mentions(trajectory_texts(record, turns))
        assert record.metadata["start"] in names
        rename = renaming.sample(random.Random(i), names)
        copy, copy_turns = rename_record(record, rename, "cf"), rename_turns(turns, rename)
        assert render_trajectory(copy_turns, fmt) == rename(render_trajectory(turns, fmt))
        images = {n: rename(n) for n in names}
        assert len(set(images.values())) == len(images)
        for name, image in images.items():
            kind = (graph.entities[name].type, len(name.split()))
            assert len(image.split()) == kind[1]
            assert all(word in words_at[(*kind, j)] for j, word in enumerate(image.split()))
            assert image == name if name in held_out else image not in held_out
            new_names += kind[1] > 1 and image not in graph.entities
        for hop, new in zip(record.metadata["chain"], copy.metadata["chain"]):
            fact = RELATIONS[new["relation"]].fact_sentence(new["head"], new["tail"])
            assert any(fact in doc["contents"] for turn in copy_turns if turn.results
                       for docs in turn.results for doc in docs)
        mapping = renaming._mapping(random.Random(i))
        raw_collisions += any(mapping[n] in held_out for n in many if n not in held_out)
        rename = renaming.sample(random.Random(i), many)
        assert not any(rename(n) in held_out for n in many if n not in held_out)
    assert new_names >= 40  # most renamed people, films, books and companies are names no entity has
    assert raw_collisions >= 5  # a single draw does hit kept names: sample's redraw is what avoids them

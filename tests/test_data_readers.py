"""QA file readers: every format on real samples (../shared/data) and on small files written here."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atomsearch_jax.data import QAFileError, QARecord, load_qa_file, read_qa_file

# (file under shared/data, detected format, record count from SOURCES.md, first question, first answers)
REAL_FILES = [
    ("nq/flashrag_nq_test_sample17.jsonl", "flashrag", 17, "who got the first nobel prize in physics",
     ["Wilhelm Conrad Röntgen"]),
    ("nq/nq_open_test_qa_3610.json", "qa_list", 3610, "when was the last time anyone was on the moon",
     ["14 December 1972 UTC", "December 1972"]),
    ("hotpotqa/hotpot_dev_distractor_sample200.jsonl", "hotpotqa", 200, None, ["Rush"]),
    ("hotpotqa/hotpot_dev_distractor_v1_first53.json", "hotpotqa", 53,
     "Were Scott Derrickson and Ed Wood of the same nationality?", ["yes"]),
    ("hotpotqa/hotpotqa_dev_qa_only_7405.json", "qa_list", 7405,
     "Were Scott Derrickson and Ed Wood of the same nationality?", ["yes"]),
    ("hotpotqa/ircot_hotpotqa_dev_subsampled500.jsonl", "ircot", 500, None, ["Chief of Protocol"]),
    ("2wikimultihopqa/2wiki_dev_sample164.jsonl", "2wiki", 164,
     "Which film whose director is younger, Forbidden Ground or Free Guy?", ["Free Guy"]),
    ("2wikimultihopqa/2wiki_dev_qa_only_12576.json", "qa_list", 12576, None, ["Małgorzata Braunek"]),
    ("musique/musique_ans_dev_sample200.jsonl", "musique", 200,
     "What is the seat of the county where Van Hook Township is located?", ["Stanley"]),
    ("musique/musique_ans_dev_qa_only_2417.json", "qa_list", 2417, "Who is the spouse of the Green performer?",
     ["Miquette Giraudy"]),
    ("popqa/popqa_sample1000_with_paragraphs.json", "popqa", 1000, "What is George Rankin's occupation?",
     ["politician", "political leader", "political figure", "polit.", "pol"]),
    ("triviaqa/triviaqa_sm_sub.jsonl", "triviaqa", 3000,
     "Brunswick, Lancastrian and Pearl Pickler are types of which vegetable?", None),
]


@pytest.mark.shared_data
@pytest.mark.parametrize("rel_path,fmt,count,question,answers", REAL_FILES, ids=[r[0] for r in REAL_FILES])
def test_real_sample_loads(shared_data, rel_path, fmt, count, question, answers):
    contents = read_qa_file(shared_data / rel_path)
    assert contents.format == fmt
    assert len(contents.records) == count and not contents.skipped
    first = contents.records[0]
    if question is not None:
        assert first.question == question
    if answers is not None:
        assert first.golden_answers == answers
    assert len({r.id for r in contents.records}) == count
    assert all(r.question.strip() and r.golden_answers for r in contents.records)


@pytest.mark.shared_data
def test_real_samples_keep_supporting_paragraphs(shared_data):
    hotpot = load_qa_file(shared_data / "hotpotqa/hotpot_dev_distractor_v1_first53.json")[0]
    assert len(hotpot.supporting) == 10
    assert {p["title"] for p in hotpot.supporting if p["is_supporting"]} == {"Scott Derrickson", "Ed Wood"}
    musique = load_qa_file(shared_data / "musique/musique_ans_dev_sample200.jsonl")[0]
    assert musique.metadata["hops"] == 2 and len(musique.supporting) == 20
    trivia = load_qa_file(shared_data / "triviaqa/triviaqa_sm_sub.jsonl")
    assert trivia[0].golden_answers[0] == "Onion" and "Allium cepa" in trivia[0].golden_answers
    # record 1781 holds U+0085 inside a string: lines must split on "\n" only
    assert "\x85" in trivia[1780].question


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_flashrag_jsonl(tmp_path):
    path = _write_jsonl(tmp_path / "nq_test.jsonl", [
        {"id": "test_0", "question": " who? ", "golden_answers": ["A", "A", "B"]},
        {"id": "test_1", "question": "what?", "golden_answers": ["C"], "metadata": {"k": 1}}])
    records = load_qa_file(path)
    assert records == [QARecord("test_0", "who?", ["A", "B"], "nq"), QARecord("test_1", "what?", ["C"], "nq",
                                                                               metadata={"k": 1})]


def test_searchr1_parquet(tmp_path):
    prompt = ("Answer the given question. You must conduct reasoning inside <think> and </think> first... "
              "Question: who wrote hamlet?\n")
    table = pa.Table.from_pylist([
        {"data_source": "nq", "prompt": [{"role": "user", "content": prompt}], "ability": "fact-reasoning",
         "reward_model": {"style": "rule", "ground_truth": {"target": ["Shakespeare", "William Shakespeare"]}},
         "extra_info": {"split": "train", "index": 0}},
        {"data_source": "hotpotqa", "prompt": [{"role": "user", "content": prompt}], "ability": "fact-reasoning",
         "reward_model": {"style": "rule", "ground_truth": {"target": ["Paris"]}},
         "extra_info": {"split": "train", "index": 1}},
    ])
    path = tmp_path / "train.parquet"
    pq.write_table(table, path)
    contents = read_qa_file(path)
    assert contents.format == "searchr1"
    first, second = contents.records
    assert first.question == "who wrote hamlet?" and first.golden_answers == ["Shakespeare", "William Shakespeare"]
    assert first.source == "nq" and first.id == "nq-0" and second.source == "hotpotqa"
    assert first.metadata == {"split": "train", "ability": "fact-reasoning"}

    # Search-R1's own files keep FlashRAG's id/question columns beside the prompt: those win.
    with_question = table.append_column("question", pa.array(["Who wrote Hamlet?", "Capital of France?"]))
    with_question = with_question.append_column("id", pa.array(["train_0", "train_1"]))
    pq.write_table(with_question, path)
    first = load_qa_file(path)[0]
    assert first.question == "Who wrote Hamlet?" and first.id == "train_0"


def test_searchr1_parquet_bad_row_named(tmp_path):
    table = pa.Table.from_pylist([
        {"prompt": [{"role": "user", "content": "Question: q0"}], "reward_model": {"ground_truth": {"target": ["a"]}}},
        {"prompt": [{"role": "user", "content": "Question: q1"}], "reward_model": {"ground_truth": {"target": []}}},
    ])
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    with pytest.raises(QAFileError, match=r"bad\.parquet row 1: .*reward_model\.ground_truth\.target"):
        load_qa_file(path)


def test_hotpot_json_list_and_2wiki_jsonl(tmp_path):
    hotpot = [{"_id": "h1", "question": "Q1?", "answer": "yes", "type": "comparison", "level": "hard",
               "supporting_facts": [["T1", 0]], "context": [["T1", ["First.", " Second."]], ["T2", ["Other."]]]}]
    path = tmp_path / "hotpot_dev.json"
    path.write_text(json.dumps(hotpot, indent=2))
    record = load_qa_file(path)[0]
    assert record.source == "hotpotqa" and record.id == "h1" and record.golden_answers == ["yes"]
    assert record.supporting == [{"title": "T1", "text": "First. Second.", "is_supporting": True},
                                 {"title": "T2", "text": "Other.", "is_supporting": False}]
    wiki = dict(hotpot[0], _id="w1", evidences=[["T1", "director", "X"]])
    contents = read_qa_file(_write_jsonl(tmp_path / "dev.jsonl", [wiki]))
    assert contents.format == "2wiki" and contents.records[0].metadata["evidences"] == [["T1", "director", "X"]]


def test_musique_popqa_triviaqa_ircot(tmp_path):
    musique = {"id": "2hop__1_2", "question": "Q?", "answer": "Stanley", "answer_aliases": ["Stanley, ND"],
               "answerable": True, "question_decomposition": [{"id": 1}, {"id": 2}],
               "paragraphs": [{"idx": 0, "title": "T", "paragraph_text": "P", "is_supporting": True}]}
    record = load_qa_file(_write_jsonl(tmp_path / "m.jsonl", [musique]))[0]
    assert record.golden_answers == ["Stanley", "Stanley, ND"] and record.metadata["hops"] == 2
    assert record.source == "musique"

    popqa = [{"id": 7, "question": "What is X's occupation?", "possible_answers": '["politician", "pol"]',
              "subj": "X", "prop": "occupation", "obj": "politician"}]
    (tmp_path / "p.json").write_text(json.dumps(popqa))
    record = load_qa_file(tmp_path / "p.json")[0]
    assert record.id == "7" and record.golden_answers == ["politician", "pol"] and record.metadata["prop"] == "occupation"

    foundry = {"context": "Question: Which vegetable?\nAnswer:", "answer": "Onion", "aliases": ["Onion", "Onions"]}
    hf = {"question": "Which fruit?", "question_id": "tq_1",
          "answer": {"value": "Apple", "aliases": ["Apple", "Apples"], "normalized_aliases": ["apple"]}}
    records = load_qa_file(_write_jsonl(tmp_path / "tq.jsonl", [foundry]))
    assert records[0].question == "Which vegetable?" and records[0].golden_answers == ["Onion", "Onions"]
    records = load_qa_file(_write_jsonl(tmp_path / "tq_hf.jsonl", [hf]), fmt="triviaqa")
    assert records[0].id == "tq_1" and records[0].golden_answers == ["Apple", "Apples"]

    ircot = {"question_id": "i1", "question_text": "When?", "contexts": [],
             "answers_objects": [{"number": "", "date": {"day": "4", "month": "July", "year": "1776"}, "spans": []}]}
    assert load_qa_file(_write_jsonl(tmp_path / "i.jsonl", [ircot]))[0].golden_answers == ["4 July 1776"]


def test_question_answer_list_and_data_object(tmp_path):
    (tmp_path / "bamboogle.json").write_text(json.dumps([{"question": "Q1", "answer": "A1"},
                                                         {"question": "Q2", "answer": ["A2", "B2"]}]))
    records = load_qa_file(tmp_path / "bamboogle.json")
    assert [(r.id, r.golden_answers, r.source) for r in records] == [("bamboogle-0", ["A1"], "bamboogle"),
                                                                     ("bamboogle-1", ["A2", "B2"], "bamboogle")]
    (tmp_path / "wrapped.json").write_text(json.dumps({"version": 1, "data": [{"question": "Q", "answer": 3}]}, indent=1))
    assert load_qa_file(tmp_path / "wrapped.json")[0].golden_answers == ["3"]


def test_malformed_jsonl_names_line(tmp_path):
    good = {"question": "q", "golden_answers": ["a"]}
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({"question": "q2"}) + "\n")
    with pytest.raises(QAFileError, match=r"f\.jsonl:3: malformed flashrag record: field 'golden_answers': missing"):
        load_qa_file(path)
    path.write_text(json.dumps(good) + "\n" + '{"question": "q", "golden_answers": [\n')
    with pytest.raises(QAFileError, match=r"f\.jsonl:2: invalid JSON"):
        load_qa_file(path)


def test_malformed_json_list_names_line(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(3)]
    rows[2]["answer"] = {"not": "an answer"}
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(rows, indent=2))  # each record spans 4 lines: record 2 starts on line 10
    with pytest.raises(QAFileError, match=r"qa\.json:10: malformed qa_list record: field 'answer'"):
        load_qa_file(path)
    path.write_text('[{"question": "q", "answer": "a"},\n {"question": "q2" "answer": "b"}]')
    with pytest.raises(QAFileError, match=r"qa\.json:2: invalid JSON"):
        load_qa_file(path)


def test_skip_malformed_counts(tmp_path):
    rows = [{"id": "a", "question": "q", "golden_answers": ["x"]}, {"id": "b", "question": "", "golden_answers": ["x"]},
            {"id": "c", "question": "q", "golden_answers": "x"}, {"id": "a", "question": "q3", "golden_answers": ["y"]},
            [1, 2]]
    path = _write_jsonl(tmp_path / "mixed.jsonl", rows)
    with pytest.raises(QAFileError, match=r"mixed\.jsonl:2: .*'question'"):
        load_qa_file(path)
    contents = read_qa_file(path, on_error="skip")
    assert [r.id for r in contents.records] == ["a", "c"]
    assert [s.location.rsplit(":", 1)[1] for s in contents.skipped] == ["2", "4", "5"]
    assert "duplicate id 'a'" in contents.skipped[1].reason
    assert load_qa_file(path, skip_malformed=True) == contents.records


def test_undetectable_and_unknown_format(tmp_path):
    path = _write_jsonl(tmp_path / "x.jsonl", [{"prompt": "p", "completion": "c"}])
    with pytest.raises(QAFileError, match=r"x\.jsonl:1: cannot detect the QA format .*'completion'"):
        load_qa_file(path)
    with pytest.raises(ValueError, match="unknown QA format 'nope'"):
        load_qa_file(path, fmt="nope")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_qa_file(tmp_path / "missing.jsonl")


def test_record_round_trip():
    record = QARecord("i", "q", ["a"], "s", [{"title": "t", "text": "x"}], {"hops": 2})
    assert QARecord.from_json_dict(json.loads(record.to_json())) == record
    with pytest.raises(ValueError, match="golden_answers"):
        QARecord("i", "q", [], "s")


def test_csv_and_tsv(tmp_path):
    (tmp_path / "bamboogle.csv").write_text('Question,Answer\n"Who, exactly?",Ann\n"Multi\nline?",Bob\n')
    records = load_qa_file(tmp_path / "bamboogle.csv")
    assert [(r.question, r.golden_answers, r.source) for r in records] == [
        ("Who, exactly?", ["Ann"], "bamboogle"), ("Multi\nline?", ["Bob"], "bamboogle")]
    (tmp_path / "popQA.tsv").write_text(
        "id\tsubj\tprop\tquestion\tpossible_answers\n"
        "1\tX\toccupation\tWhat is X's occupation?\t[\"politician\"]\n"
        "2\tY\toccupation\tWhat is Y's occupation?\tnot json\n")
    with pytest.raises(QAFileError, match=r"popQA\.tsv:3: malformed popqa record: field 'possible_answers'"):
        load_qa_file(tmp_path / "popQA.tsv")
    assert load_qa_file(tmp_path / "popQA.tsv", skip_malformed=True)[0].golden_answers == ["politician"]


def test_official_triviaqa_json(tmp_path):
    doc = {"Version": 1.0, "Data": [{"Question": "Which planet?", "QuestionId": "tc_1",
                                     "Answer": {"Value": "Mars", "Aliases": ["Mars", "Red Planet"]}}]}
    (tmp_path / "wikipedia-dev.json").write_text(json.dumps(doc, indent=2))
    record = load_qa_file(tmp_path / "wikipedia-dev.json", source="triviaqa")[0]
    assert (record.id, record.question, record.golden_answers) == ("tc_1", "Which planet?", ["Mars", "Red Planet"])


def test_math_rows_aime_and_math_styles(tmp_path):
    path = tmp_path / "aime2024.jsonl"
    rows = [{"ID": "2024-I-1", "Problem": "Find x.", "Solution": "...", "Answer": 204},
            {"problem": "Find y.", "solution": "so $\\boxed{\\frac{1}{2}}$", "level": "Level 5"},
            {"id": "d3", "problem": "Find z.", "answer": "3\\sqrt{2}"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = load_qa_file(path)
    assert [(r.id, r.question, r.golden_answers, r.source) for r in records] == [
        ("2024-I-1", "Find x.", ["204"], "aime2024"), ("aime2024-1", "Find y.", ["\\frac{1}{2}"], "aime2024"),
        ("d3", "Find z.", ["3\\sqrt{2}"], "aime2024")]
    assert records[1].metadata == {"level": "Level 5"}
    (tmp_path / "bad.jsonl").write_text(json.dumps({"problem": "No answer here.", "solution": "none"}) + "\n")
    with pytest.raises(ValueError, match="answer"):
        load_qa_file(tmp_path / "bad.jsonl", "math")

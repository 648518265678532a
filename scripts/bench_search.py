"""Search: in-process BM25 against bm25s `retrieve` and rank_bm25, and the HTTP server under concurrent clients,
over the corpus built from all shared paragraph-carrying QA samples.

  python scripts/bench_search.py [--shared_data=../shared/data] [--clients=16] [--repeats=5]

Queries are the distinct questions of those files. Each side runs its own pipeline from query strings to
top-k, on the same corpus, the same analysis (stemmer, stopwords) and the same k:
- bm25s: `bm25s.tokenize` (the index's stopwords and PyStemmer stemmer) then `BM25.retrieve` on the very
  index we search (loaded from the same directory), with its fastest backend that is installed here (numba
  when importable, else numpy; printed); its top-k is checked equal to ours (same scores, same documents
  up to ties at the k-th score) for every query before timing;
- rank_bm25: `bm25s.tokenize` then `BM25Okapi.get_scores` + argsort, one query at a time (its only mode).
Rows: single-query latency (one query per call; p50/p99 over every call of every round) and batched
throughput (--batch_size queries per call over all questions). Timing: bench_util.alternate (warm-up,
--repeats rounds alternating the sides, medians). The server runs as a separate process (python -m
atomsearch_jax.serve_retriever on an ephemeral loopback port); each client thread uses its own
HttpRetriever (keep-alive session); every answer is checked against the in-process result for the same
query: errors = failed queries + answers that differ.
Last line: RESULT search inproc_qps=… server_qps=… p99_ms=… errors=… ratio_vs_rank_bm25=… ratio_vs_bm25s=…
single_p50_ms=…   (inproc_qps: batched median; ratio_vs_bm25s: batched, ratio of medians;
ratio_vs_rank_bm25: our batched qps / rank_bm25's qps; single_p50_ms: ours, one query per call)
"""
from __future__ import annotations

import concurrent.futures
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(__file__))
from bench_util import alternate, load_average, probe_machine, speedup  # noqa: E402

from atomsearch_jax.search.bm25 import BM25Index, BM25Retriever, BM25Settings, keep_jax_on_cpu
from atomsearch_jax.search.corpus_builder import CorpusBuilder, read_qa_paragraphs
from atomsearch_jax.search.http_client import HttpRetriever

FLAGS = flags.FLAGS
flags.DEFINE_string("shared_data", str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"),
                    "Directory holding the shared QA samples.")
flags.DEFINE_integer("topk", 10, "Documents per query.")
flags.DEFINE_integer("batch_size", 64, "Queries per in-process search call.")
flags.DEFINE_integer("repeats", 5, "Timed alternated rounds of the in-process phases.")
flags.DEFINE_integer("single_queries", 200, "Queries per round of the single-query phase.")
flags.DEFINE_integer("clients", 16, "Concurrent HTTP clients.")
flags.DEFINE_integer("requests_per_client", 300, "Requests each client sends at most.")
flags.DEFINE_integer("queries_per_request", 1, "Queries in each HTTP request.")
flags.DEFINE_enum("protocol", "searchr1", ["searchr1", "flashrag"], "API the clients use.")
flags.DEFINE_float("max_seconds", 60.0, "Time bound of the server phase.")

PARAGRAPH_FILES = ("hotpotqa/hotpot_dev_distractor_sample200.jsonl", "hotpotqa/hotpot_dev_distractor_v1_first53.json",
                   "hotpotqa/ircot_hotpotqa_dev_subsampled500.jsonl", "2wikimultihopqa/2wiki_dev_sample164.jsonl",
                   "musique/musique_ans_dev_sample200.jsonl", "popqa/popqa_sample1000_with_paragraphs.json")


def corpus_and_questions(root: pathlib.Path) -> tuple[list[dict], list[str]]:
    builder, questions = CorpusBuilder(), []
    for name in PARAGRAPH_FILES:
        for record in read_qa_paragraphs(root / name):
            builder.add_record(record)
            questions.append(record.question)
    return builder.documents, list(dict.fromkeys(questions))


def bm25s_peer(index_dir: pathlib.Path):
    """bm25s' own retriever over the saved index, with numba when it imports (its fastest CPU backend)."""
    import bm25s  # noqa: PLC0415
    try:
        import numba  # noqa: F401,PLC0415
        backend = "numba"
    except ImportError:
        backend = "numpy"
    model = bm25s.BM25.load(index_dir, mmap=True, show_progress=False)
    model.backend = backend
    if backend == "numba":
        model.activate_numba_scorer()
    return model, backend


def bm25s_analyse(settings: BM25Settings):
    """The peer's own query analysis: bm25s.tokenize with the index's stopwords and PyStemmer stemmer."""
    import bm25s  # noqa: PLC0415
    import Stemmer  # noqa: PLC0415
    stemmer = Stemmer.Stemmer(settings.stemmer) if settings.stemmer else None
    return lambda texts: bm25s.tokenize(list(texts), lower=True, stopwords=settings.stopwords or [], stemmer=stemmer,
                                        return_ids=False, show_progress=False)


def topk_mismatches(ours: list[tuple[np.ndarray, np.ndarray]], peer_ids: np.ndarray, peer_scores: np.ndarray) -> int:
    """Queries whose top-k differ: scores not equal (rel. 1e-4), or different documents above the k-th score.

    bm25s fills rows with zero-score documents when fewer than k match; ours returns matching ones only."""
    bad = 0
    for (rows, scores), p_ids, p_scores in zip(ours, peer_ids, peer_scores):
        keep = p_scores > 0
        p_ids, p_scores = p_ids[keep], p_scores[keep]
        order = np.argsort(-p_scores, kind="stable")
        p_ids, p_scores = p_ids[order], p_scores[order]
        if len(p_scores) != len(scores) or not np.allclose(p_scores, scores, rtol=1e-4, atol=1e-6):
            bad += 1
            continue
        if len(scores):
            above = scores > scores[-1] * (1 + 1e-4)
            if set(rows[above].tolist()) != set(p_ids[above].tolist()):
                bad += 1
    return bad


def in_process_timings(index: BM25Index, peer, questions: list[str]) -> tuple[dict, dict]:
    """Alternated single-query and batched rounds of ours, bm25s and rank_bm25.

    Returns ({side: Timing of a batched round}, {side: per-call latencies in ms of the single-query rounds})."""
    from rank_bm25 import BM25Okapi  # noqa: PLC0415  (test extra; only the baseline needs it)
    analyse, k, size = bm25s_analyse(index.settings), FLAGS.topk, FLAGS.batch_size
    rank = BM25Okapi(analyse([index.store[i]["contents"] for i in range(index.num_docs)]))
    batches = [questions[i:i + size] for i in range(0, len(questions), size)]
    singles = questions[:FLAGS.single_queries]
    lat: dict[str, list[float]] = {"ours": [], "bm25s": [], "rank_bm25": []}

    def ours_one(q: str) -> None:
        index.search([q], k)

    def bm25s_one(q: str) -> None:
        peer.retrieve(analyse([q]), k=k, n_threads=0, show_progress=False)

    def rank_one(q: str) -> None:
        scores = rank.get_scores(analyse([q])[0])
        np.argsort(scores)[::-1][:k]

    def single_round(name: str, one) -> float:
        start = time.perf_counter()
        for q in singles:
            t = time.perf_counter()
            one(q)
            lat[name].append(1000 * (time.perf_counter() - t))
        return time.perf_counter() - start

    threads = os.cpu_count() or 1

    def batched(search) -> float:
        start = time.perf_counter()
        for batch in batches:
            search(batch)
        return time.perf_counter() - start

    single = alternate({"ours": lambda: single_round("ours", ours_one),
                        "bm25s": lambda: single_round("bm25s", bm25s_one),
                        "rank_bm25": lambda: single_round("rank_bm25", rank_one)}, repeats=FLAGS.repeats, warmup=0)
    del single
    batch = alternate({"ours": lambda: batched(lambda b: index.search(b, k)),
                       "bm25s": lambda: batched(lambda b: peer.retrieve(analyse(b), k=k, n_threads=threads,
                                                                        show_progress=False))},
                      repeats=FLAGS.repeats)
    return {name: t["s"] for name, t in batch.items()}, lat


def start_server(index_dir: pathlib.Path, workdir: pathlib.Path) -> tuple[subprocess.Popen, str]:
    port_file = workdir / "port"
    log = open(workdir / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "atomsearch_jax.serve_retriever", f"--index_dir={index_dir}",
                             "--port=0", f"--port_file={port_file}", f"--max_topk={max(100, FLAGS.topk)}"],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"retrieval server did not start; see {workdir / 'server.log'}")
        time.sleep(0.1)
    return proc, f"http://127.0.0.1:{int(port_file.read_text())}"


def bench_server(url: str, questions: list[str], expected: dict[str, list[str]]) -> dict:
    latencies, counters, lock = [], {"queries": 0, "errors": 0}, threading.Lock()
    stop_at = time.perf_counter() + FLAGS.max_seconds

    def client(cid: int) -> None:
        with HttpRetriever(url, FLAGS.protocol, pool_size=1) as retriever:
            retriever.search(questions[:1], FLAGS.topk)  # connect
            for i in range(FLAGS.requests_per_client):
                if time.perf_counter() > stop_at:
                    break
                first = (cid * FLAGS.requests_per_client + i) * FLAGS.queries_per_request
                batch = [questions[(first + j) % len(questions)] for j in range(FLAGS.queries_per_request)]
                t0 = time.perf_counter()
                results = retriever.search(batch, FLAGS.topk)
                elapsed = time.perf_counter() - t0
                bad = sum(not r.ok or [d["id"] for d in r.docs] != expected[q] for q, r in zip(batch, results))
                with lock:
                    latencies.append(elapsed)
                    counters["queries"] += len(batch)
                    counters["errors"] += bad

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(FLAGS.clients) as pool:
        for future in [pool.submit(client, c) for c in range(FLAGS.clients)]:
            future.result()
    wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {"queries": counters["queries"], "seconds": wall, "errors": counters["errors"],
            "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def main(argv: list[str]) -> None:
    del argv
    keep_jax_on_cpu()
    root = pathlib.Path(FLAGS.shared_data)
    if not root.is_dir():
        sys.exit(f"shared data not found at {root} (pass --shared_data)")
    probe = probe_machine()
    print(probe.line(), flush=True)
    docs, questions = corpus_and_questions(root)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        BM25Index.build(docs).save(workdir / "index")
        index = BM25Index.load(workdir / "index", mmap=True)  # what the server loads
        peer, backend = bm25s_peer(workdir / "index")
        ours = index.search(questions, FLAGS.topk)
        peer_ids, peer_scores = peer.retrieve(bm25s_analyse(index.settings)(questions), k=FLAGS.topk,
                                              show_progress=False)
        bad = topk_mismatches(ours, np.asarray(peer_ids), np.asarray(peer_scores))
        if bad:
            sys.exit(f"top-{FLAGS.topk} of {bad} of {len(questions)} queries differ from bm25s retrieve")
        retriever = BM25Retriever(index)
        expected = {q: [d["id"] for d in r.docs] for q, r in zip(questions, retriever.search(questions, FLAGS.topk))}
        batched, latencies = in_process_timings(index, peer, questions)
        proc, url = start_server(workdir / "index", workdir)
        try:
            server = bench_server(url, questions, expected)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    n = len(questions)
    qps = {name: n / t.median for name, t in batched.items()}
    single = {name: (float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), 1000 / float(np.mean(ms)))
              for name, ms in latencies.items()}
    server_qps = server["queries"] / server["seconds"]
    ratio_bm25s = speedup(batched["ours"], batched["bm25s"])
    ratio_rank = qps["ours"] / single["rank_bm25"][2]
    print(f"corpus: {len(docs)} paragraphs from {len(PARAGRAPH_FILES)} shared files; {n} distinct questions as "
          f"queries (all {n} agree with bm25s' top-{FLAGS.topk}); top-{FLAGS.topk}; bm25s {bm25s_version()} "
          f"backend {backend}; {FLAGS.repeats} alternated rounds")
    print("| backend | mode | queries/s median (min-max) | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    names = {"ours": "ours (BM25Index.search)", "bm25s": f"bm25s BM25.retrieve ({backend})",
             "rank_bm25": "rank_bm25 BM25Okapi"}
    for name in ("ours", "bm25s", "rank_bm25"):
        p50, p99, rate = single[name]
        print(f"| {names[name]} | 1 query per call, {FLAGS.single_queries} calls x {FLAGS.repeats} | {rate:.1f} "
              f"| {p50:.2f} | {p99:.2f} | |")
    for name, t in batched.items():
        extra = f", {os.cpu_count()} threads" if name == "bm25s" else ""
        print(f"| {names[name]} | batches of {FLAGS.batch_size}{extra}, {n} queries x {FLAGS.repeats} | "
              f"{t.spread(n, 'q/s')} | | | |")
    print(f"| HTTP server, {FLAGS.clients} clients x {FLAGS.queries_per_request} query/request ({FLAGS.protocol})"
          f" | {server['queries']} queries in {server['seconds']:.2f} s | {server_qps:.1f} | {server['p50']:.2f} | "
          f"{server['p99']:.2f} | {server['errors']} |")
    print(f"load average at the end {load_average()}")
    print(f"RESULT search inproc_qps={qps['ours']:.1f} server_qps={server_qps:.1f} p99_ms={server['p99']:.2f} "
          f"errors={server['errors']} ratio_vs_rank_bm25={ratio_rank:.1f} ratio_vs_bm25s={ratio_bm25s:.2f} "
          f"single_p50_ms={single['ours'][0]:.2f}")


def bm25s_version() -> str:
    import bm25s  # noqa: PLC0415
    return bm25s.__version__


if __name__ == "__main__":
    app.run(main)

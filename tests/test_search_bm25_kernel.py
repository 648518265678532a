"""The compiled BM25 top-k kernel against scipy's sparse product, the analyser against bm25s.tokenize, and
the pipelined, threaded search against one-query calls."""
import concurrent.futures

import numpy as np
import pytest
import scipy.sparse as sp

from atomsearch_jax.search.analysis import Analyzer
from atomsearch_jax.search.bm25 import BM25Index
from atomsearch_jax.search.bm25_kernel import Scratch, score_top_k
from atomsearch_jax.search.corpus_builder import read_qa_paragraphs
from search_fakes import WORDS, make_docs


def reference_top_k(weights: sp.csr_matrix, queries: list[list[int]], k: int):
    """scipy's (query term counts @ weights), then every non-zero sorted by (-score, row), first k."""
    rows = [q for q, terms in enumerate(queries) for _ in terms]
    cols = [t for terms in queries for t in terms]
    counts = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(queries), weights.shape[0]))
    product = (counts @ weights).tocsr()
    out = []
    for q in range(len(queries)):
        lo, hi = product.indptr[q], product.indptr[q + 1]
        data, docs = product.data[lo:hi], product.indices[lo:hi]
        order = np.lexsort((docs, -data))[:k]
        out.append((docs[order], data[order]))
    return out


def run_kernel(weights: sp.csr_matrix, queries: list[list[int]], k: int):
    ptr = np.concatenate([[0], np.cumsum([len(q) for q in queries])]).astype(np.int64)
    terms = np.array([t for q in queries for t in q], dtype=np.int64)
    rows = np.zeros((len(queries), k), np.int64)
    scores = np.zeros((len(queries), k), np.float32)
    counts = np.zeros(len(queries), np.int64)
    scratch = Scratch(weights.shape[1])
    score_top_k(weights.indptr.astype(np.int64), weights.indices.astype(np.int64), weights.data, ptr, terms, k,
                rows, scores, counts, scratch.acc, scratch.touched_rows)
    assert not scratch.acc.any(), "the accumulator must be left zeroed for the next call"
    return [(rows[q, :counts[q]], scores[q, :counts[q]]) for q in range(len(queries))]


@pytest.mark.parametrize("integer_weights", [True, False])
@pytest.mark.parametrize("k", [1, 3, 40, 500])
def test_kernel_equals_sparse_product_bit_for_bit(integer_weights, k):
    rng = np.random.default_rng(k)
    vocab, num_docs = 30, 200
    dense = rng.random((vocab, num_docs)) < 0.15
    values = rng.integers(1, 4, dense.sum()) if integer_weights else rng.random(dense.sum()) + 0.01
    weights = sp.csr_matrix(dense, dtype=np.float32)
    weights.data = values.astype(np.float32)  # integer weights: many tied scores
    queries = [list(rng.integers(0, vocab, rng.integers(0, 8))) for _ in range(40)]
    queries += [[3, 3, 3, 7], [29], []]  # repeated terms count; a query may have no known term
    for (rows, scores), (ref_rows, ref_scores) in zip(run_kernel(weights, queries, k),
                                                      reference_top_k(weights, queries, k)):
        np.testing.assert_array_equal(rows, ref_rows)
        np.testing.assert_array_equal(scores, ref_scores)


TEXTS = ["The Drummer of the band -- THE drummer!", "", "   ", "a I x", "Who directed 'Casablanca' (1942)?",
         "naïve café résumé Zürich 2010s", "running runs ran runner's", "the and of to"]


@pytest.mark.parametrize("stemmer, stopwords", [("english", "en"), (None, "en"), ("english", None), (None, None)])
def test_analyzer_equals_bm25s_tokenize(stemmer, stopwords, shared_data):
    import bm25s
    import Stemmer
    texts = TEXTS + [" ".join(WORDS)]
    for name in ("hotpotqa/hotpot_dev_distractor_sample200.jsonl", "musique/musique_ans_dev_sample200.jsonl"):
        for record in list(read_qa_paragraphs(shared_data / name))[:40]:
            texts.append(record.question)
            texts.extend(f"{p.title} {p.text}" for p in record.paragraphs[:3])
    expected = bm25s.tokenize(texts, lower=True, stopwords=stopwords or [], return_ids=False, show_progress=False,
                              stemmer=Stemmer.Stemmer(stemmer) if stemmer else None)
    analyzer = Analyzer(stemmer, stopwords)
    assert analyzer.terms(texts) == expected
    assert analyzer.terms(texts[::-1]) == expected[::-1]  # the stem cache changes nothing


def test_pipelined_batch_equals_single_queries_and_threads_agree():
    docs = make_docs(n=300, seed=3)
    index = BM25Index.build(docs)
    rng = np.random.default_rng(0)
    queries = [" ".join(rng.choice(WORDS, size=rng.integers(1, 6))) for _ in range(150)]  # several chunks
    batched = index.search(queries, 6)
    for query, (rows, scores) in zip(queries, batched):
        single_rows, single_scores = index.search([query], 6)[0]
        np.testing.assert_array_equal(rows, single_rows)
        np.testing.assert_array_equal(scores, single_scores)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for result in pool.map(lambda _: index.search(queries, 6), range(8)):
            for (rows, scores), (ref_rows, ref_scores) in zip(result, batched):
                np.testing.assert_array_equal(rows, ref_rows)
                np.testing.assert_array_equal(scores, ref_scores)

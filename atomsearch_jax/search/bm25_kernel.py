"""Compiled BM25 scoring and top-k over a term-by-document weight matrix in CSR form.

One query at a time, as an accumulate-then-select loop that touches only the documents sharing a term
with the query (the per-query work is its postings, not the corpus size): the weights of each distinct
query term's postings, times the term's count in the query, are added into a dense float32 accumulator in
ascending term order (the order, and so the float32 result, of scipy's sparse product
``query_counts @ weights``); one pass over the touched documents then keeps the k best in a sorted buffer
(score descending, ties to the lower corpus row) and clears the accumulator. The kernels release the GIL (``nogil``), so a batch is split
across threads by the caller and concurrent callers do not serialise.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def score_top_k(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                query_ptr: np.ndarray, query_terms: np.ndarray, k: int,
                out_rows: np.ndarray, out_scores: np.ndarray, out_counts: np.ndarray,
                acc: np.ndarray, touched_rows: np.ndarray) -> None:
    """BM25 top-k of queries [Q] into caller-owned outputs.

    indptr [V+1], indices [nnz] (corpus rows), data [nnz] float32 > 0: the weight matrix, one row per term.
    query_ptr [Q+1], query_terms [T]: query q's term ids (repeats count) are query_terms[query_ptr[q]:
    query_ptr[q+1]], any order. Writes out_rows [Q, k] int64 and out_scores [Q, k] float32 (best first) and
    out_counts [Q]: how many of the k slots hold a document. Scratch, one set per concurrent caller (see
    ``Scratch``): acc float32 [D], all zero on entry and left so on exit (a zero marks an untouched row:
    weights are positive); touched_rows int [D], any content.
    """
    for q in range(query_ptr.shape[0] - 1):
        terms = np.sort(query_terms[query_ptr[q]:query_ptr[q + 1]])
        n_touched = 0
        i = 0
        while i < terms.shape[0]:
            term = terms[i]
            count = 1
            while i + count < terms.shape[0] and terms[i + count] == term:
                count += 1
            i += count
            scale = np.float32(count)
            for p in range(indptr[term], indptr[term + 1]):
                row = indices[p]
                touched_rows[n_touched] = row  # branch-free: kept only when the row was untouched
                n_touched += acc[row] == 0
                acc[row] += scale * data[p]
        filled = 0
        worst_score, worst_row = np.float32(0), -1
        for j in range(n_touched):
            row = touched_rows[j]
            score = acc[row]
            acc[row] = 0
            if filled == k and (score < worst_score or (score == worst_score and row > worst_row)):
                continue
            pos = filled if filled < k else k - 1
            filled = min(filled + 1, k)
            while pos > 0 and (out_scores[q, pos - 1] < score
                               or (out_scores[q, pos - 1] == score and out_rows[q, pos - 1] > row)):
                out_scores[q, pos] = out_scores[q, pos - 1]
                out_rows[q, pos] = out_rows[q, pos - 1]
                pos -= 1
            out_scores[q, pos] = score
            out_rows[q, pos] = row
            worst_score, worst_row = out_scores[q, filled - 1], out_rows[q, filled - 1]
        out_counts[q] = filled


class Scratch:
    """Per-thread accumulator buffers over D corpus rows (allocated once: 8 bytes a row, so a 21M-passage
    corpus costs ~170 MB per searching thread rather than a fresh allocation per call)."""

    def __init__(self, num_docs: int):
        self.acc = np.zeros(num_docs, dtype=np.float32)
        self.touched_rows = np.empty(num_docs, dtype=np.int32 if num_docs < 2**31 else np.int64)

"""BM25 over a corpus with bm25s: build, save, load (memory-mapped), batched top-k with scores.

bm25s computes the BM25 weight of every (term, document) pair once, at build time, into a sparse
term-by-document matrix. A query's scores are the sum of its terms' rows (the sparse product
query_counts @ weights), followed by a top-k over the documents it touched: documents sharing no term
with the query score 0 and are never returned. Both run in a compiled kernel (bm25_kernel.py), a batch
split across the host's cores.

bm25s is imported lazily: importing it initialises a JAX backend (bm25s.selection calls
jax.lax.top_k at import time), which must not happen before ``jax.distributed.initialize()`` in a
training process.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import sys
import threading
from typing import Sequence

import numpy as np

from atomsearch_jax.search.analysis import Analyzer
from atomsearch_jax.search.bm25_kernel import Scratch, score_top_k
from atomsearch_jax.search.documents import DocStore, PathLike
from atomsearch_jax.search.retriever import Retriever, SearchResult

META_FILE = "atomsearch_bm25.json"
_MAX_CACHED_TOKENS = 1 << 20
_MIN_CHUNK = 16  # queries per scoring task: below this the hand-off to a pool thread costs more than it saves
_FORMAT_VERSION = 1


def _bm25s():
    import bm25s  # noqa: PLC0415  (see the module docstring)
    return bm25s


def keep_jax_on_cpu() -> None:
    """For processes that only search (server, index builder): the JAX backend that importing bm25s
    initialises must not claim the host's TPU/GPU, which a training process on that host needs."""
    if "jax" not in sys.modules:
        os.environ["JAX_PLATFORMS"] = "cpu"


@dataclasses.dataclass(frozen=True)
class BM25Settings:
    """BM25 variant and text analysis. Defaults are Pyserini's (k1=0.9, b=0.4), which the BM25 indexes
    of Search-R1 and FlashRAG use; ``stemmer``/``stopwords`` None disables that step."""
    method: str = "lucene"
    k1: float = 0.9
    b: float = 0.4
    delta: float = 0.5
    stemmer: str | None = "english"
    stopwords: str | None = "en"


class BM25Index:
    """A bm25s index plus the corpus rows it scores. Thread-safe for concurrent searches."""

    def __init__(self, model, store: DocStore, settings: BM25Settings):
        self._model = model
        self.store = store
        self.settings = settings
        self._analyzer = Analyzer(settings.stemmer, settings.stopwords)
        scores = model.scores
        self.num_docs = int(scores["num_docs"])
        if self.num_docs != len(store):
            raise ValueError(f"index scores {self.num_docs} documents but its corpus holds {len(store)}")
        # Rows = terms, columns = documents: bm25s stores each term's postings contiguously. Stored dtypes
        # are kept (the kernel compiles per dtype) so a memory-mapped index is not copied into memory.
        self._indptr = np.asarray(scores["indptr"])
        self._indices = np.asarray(scores["indices"])
        self._data = np.asarray(scores["data"])
        self._vocab: dict[str, int] = model.vocab_dict
        self._nonoccurrence = getattr(model, "nonoccurrence_array", None)
        self._threads = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        self._pool = concurrent.futures.ThreadPoolExecutor(self._threads, thread_name_prefix="bm25")
        self._local = threading.local()
        self._token_ids: dict[str, int] = {}  # analysed token -> vocabulary id, -1 when not in the vocabulary

    @classmethod
    def build(cls, docs: Sequence[dict], settings: BM25Settings = BM25Settings(), *,
              show_progress: bool = False) -> "BM25Index":
        """Indexes ``contents`` (title and text) of each document."""
        if not docs:
            raise ValueError("cannot build a BM25 index over an empty corpus")
        bm25s = _bm25s()
        terms = Analyzer(settings.stemmer, settings.stopwords).terms([d["contents"] for d in docs], show_progress=show_progress)
        # Term ids in first-seen order (bm25s would number them in set order, which changes with the
        # process's hash seed): the same corpus then gives byte-identical indexes, and the same float
        # summation order at query time, in every process.
        vocab: dict[str, int] = {}
        ids = [[vocab.setdefault(t, len(vocab)) for t in doc_terms] for doc_terms in terms]
        model = bm25s.BM25(method=settings.method, k1=settings.k1, b=settings.b, delta=settings.delta)
        model.index((ids, vocab), show_progress=show_progress)
        return cls(model, DocStore(docs), settings)

    def save(self, directory: PathLike) -> None:
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._model.save(directory, show_progress=False)
        self.store.save(directory)
        meta = {"format_version": _FORMAT_VERSION, "num_docs": self.num_docs,
                "settings": dataclasses.asdict(self.settings)}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: PathLike, *, mmap: bool = True) -> "BM25Index":
        """Loads a saved index; with mmap the score arrays and corpus text stay on disk (page cache)."""
        directory = pathlib.Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{directory}: not a BM25 index directory (missing {META_FILE}; "
                                    "build one with `python -m atomsearch_jax.build_index`)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{meta_path}: unsupported format_version {meta.get('format_version')!r}")
        settings = BM25Settings(**meta["settings"])
        model = _bm25s().BM25.load(directory, mmap=mmap, show_progress=False)
        return cls(model, DocStore.load(directory, mmap_text=mmap), settings)

    def _term_ids(self, queries: Sequence[str]) -> list[list[int]]:
        """Each query's vocabulary ids (repeats kept, unknown terms dropped), through a token -> id cache."""
        token_lists = [self._analyzer.tokens(q) for q in queries]
        cache = self._token_ids
        missing = {t for tokens in token_lists for t in tokens if t not in cache}
        if missing:
            if len(cache) + len(missing) > _MAX_CACHED_TOKENS:
                cache = self._token_ids = {}  # a new dict: concurrent readers keep a complete one
                missing = {t for tokens in token_lists for t in tokens}
            stems, vocab = self._analyzer.stems(missing), self._vocab
            cache.update({t: vocab.get(stems[t], -1) for t in missing})
        return [[i for i in map(cache.__getitem__, tokens) if i >= 0] for tokens in token_lists]

    def _query_terms(self, queries: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query_ptr [B+1], term ids [T] with repeats, per-query constant score offset [B])."""
        ids = self._term_ids(queries)
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        query_ptr = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=query_ptr[1:])
        terms = np.array([t for x in ids for t in x], dtype=np.int64)
        offsets = np.zeros(len(queries), dtype=np.float32)
        if self._nonoccurrence is not None:  # BM25L / BM25+ add a per-term score to every document
            np.add.at(offsets, np.repeat(np.arange(len(queries)), lengths), np.asarray(self._nonoccurrence)[terms])
        return query_ptr, terms, offsets

    def _score(self, query_ptr: np.ndarray, terms: np.ndarray, rows: np.ndarray, scores: np.ndarray,
               counts: np.ndarray) -> None:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = Scratch(self.num_docs)
        score_top_k(self._indptr, self._indices, self._data, query_ptr, terms, rows.shape[1], rows, scores, counts,
                    scratch.acc, scratch.touched_rows)

    def search(self, queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: (corpus rows [<=k], scores [<=k]) best first; only documents matching a term."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        n = len(queries)
        rows = np.zeros((n, k), dtype=np.int64)
        scores = np.zeros((n, k), dtype=np.float32)
        counts = np.zeros(n, dtype=np.int64)
        offsets = np.zeros(n, dtype=np.float32)
        # A pipeline: this thread analyses chunk i+1 (Python, holds the GIL) while pool threads score chunk i
        # (compiled, GIL released); a batch of one chunk is scored right here.
        chunk = max(_MIN_CHUNK, -(-n // (4 * self._threads)))
        pending = []
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            query_ptr, terms, offsets[lo:hi] = self._query_terms(queries[lo:hi])
            args = (query_ptr, terms, rows[lo:hi], scores[lo:hi], counts[lo:hi])
            if hi - lo == n:
                self._score(*args)
            else:
                pending.append(self._pool.submit(self._score, *args))
        for future in pending:
            future.result()
        if self._nonoccurrence is not None:
            scores += offsets[:, None]
        return [(rows[i, :counts[i]], scores[i, :counts[i]]) for i in range(n)]


class BM25Retriever(Retriever):
    """In-process BM25 (the embedded default backend)."""

    def __init__(self, index: BM25Index):
        self.index = index

    @classmethod
    def from_documents(cls, docs: Sequence[dict], settings: BM25Settings = BM25Settings()) -> "BM25Retriever":
        return cls(BM25Index.build(docs, settings))

    @classmethod
    def from_directory(cls, directory: PathLike, *, mmap: bool = True) -> "BM25Retriever":
        return cls(BM25Index.load(directory, mmap=mmap))

    def _search(self, queries: list[str], topk: int) -> list[SearchResult]:
        return [SearchResult(self.index.store.hits(rows, scores)) for rows, scores in self.index.search(queries, topk)]

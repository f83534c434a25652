"""Contextual calibration ("Calibrate Before Use", Zhao et al., ICML 2021).

A model's label distribution is biased by the prompt (label order, majority
label in the demos, common tokens). Asking it with content-free inputs such as
"N/A", "" or "[MASK]" measures that bias as p_cf; dividing by p_cf and
renormalizing (W = diag(p_cf)^-1, b = 0) removes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "contextual_calibrate",
    "average_content_free",
    "probs_from_top_logprobs",
    "label_codes",
]

# Keeps a label the model never emits on content-free input from blowing up to inf.
_EPS = 1e-6


def _normalize(p: np.ndarray) -> np.ndarray:
    s = p.sum(axis=-1, keepdims=True)
    K = p.shape[-1]
    return np.divide(p, s, out=np.full(p.shape, 1.0 / K), where=s > 0)


def contextual_calibrate(probs: np.ndarray, p_cf: np.ndarray) -> np.ndarray:
    """normalize(p / p_cf) row-wise; accepts (n, K) or (K,) probs."""
    p = np.asarray(probs, dtype=np.float64)
    cf = np.asarray(p_cf, dtype=np.float64)
    if cf.ndim != 1 or p.shape[-1] != cf.shape[0]:
        raise ValueError(f"p_cf must have shape ({p.shape[-1]},), got {cf.shape}")
    cf = _normalize(np.maximum(cf, 0.0))
    return _normalize(p / np.maximum(cf, _EPS))


def average_content_free(dists: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of the (normalized) distributions from several content-free inputs."""
    if len(dists) == 0:
        raise ValueError("need at least one content-free distribution")
    d = np.stack([np.asarray(x, dtype=np.float64) for x in dists])
    if d.ndim != 2:
        raise ValueError("each content-free distribution must be 1-D (K,)")
    return _normalize(_normalize(d).mean(axis=0))


def label_codes(labels: Sequence[str]) -> list[str]:
    """Short codes "A".."Z", then "AA", "AB", ... (spreadsheet-column order)."""
    out = []
    for i in range(len(labels)):
        s, i = "", i + 1
        while i > 0:
            i, r = divmod(i - 1, 26)
            s = chr(ord("A") + r) + s
        out.append(s)
    return out


def _match(token: str, names: list[str], codes: list[str] | None) -> int | None:
    t = token.strip().casefold()
    if not t:
        return None
    # Codes first: the prompt asked for them, so "A" means code A even if a
    # label name also starts with "a".
    if codes is not None:
        for i, c in enumerate(codes):
            if t == c:
                return i
    for i, name in enumerate(names):
        if t == name:
            return i
    hits = [i for i, name in enumerate(names) if name.startswith(t)]
    return hits[0] if len(hits) == 1 else None


def probs_from_top_logprobs(
    top: Sequence[tuple[str, float]],
    labels: Sequence[str],
    codes: Sequence[str] | None = None,
) -> np.ndarray | None:
    """Label distribution (K,) from a first-token top-logprobs list.

    A token matches a label if, stripped and case-folded, it equals the
    label's code or name, or is a non-empty prefix of exactly one label name.
    Probabilities exp(logprob) are summed per label (" A" and "A" both count)
    and renormalized over labels; None if no token matched.
    """
    names = [lab.strip().casefold() for lab in labels]
    cf_codes = None if codes is None else [c.strip().casefold() for c in codes]
    if cf_codes is not None and len(cf_codes) != len(names):
        raise ValueError("codes and labels must have the same length")
    p = np.zeros(len(names))
    matched = False
    for token, logprob in top:
        i = _match(token, names, cf_codes)
        if i is None or not math.isfinite(logprob):
            continue
        p[i] += math.exp(logprob)
        matched = True
    if not matched or p.sum() <= 0:
        return None
    return p / p.sum()

"""Shortlists for tasks with many labels: each text is shown only the k labels nearest to it.

Listing every label in every prompt costs tokens that grow with the label count, and a small model chooses
worse among 150 labels than among 10. A label is described by its name (underscores read as spaces), its
description and the task's demonstrations of it; a text's shortlist is the labels whose description is most
similar to the text (TF-IDF cosine over words and character n-grams, so "transfer" finds "transfer_money" and
"trnasfer" still finds it; scikit-learn, no model, no network). The judge chooses within the shortlist or
answers "none of these", and then sees the next k labels (`task.shortlist_rounds` shortlists at most).
Shortlists are deterministic for a text and a task, so their answers are cached like any other."""

from __future__ import annotations

from typing import Any

from llmlabel.config import Task


class Shortlister:
    def __init__(self, task: Task, pool: list[tuple[str, str]] | None = None) -> None:
        """`pool`: extra (text, label) demonstrations, e.g. the task's examples_file rows."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion

        self.labels = task.label_names
        docs = {lab: [lab.replace("_", " ").replace("-", " "), task.labels[lab]] for lab in self.labels}
        for ex in task.examples:
            for lab in ([ex.label] if ex.label else []) + (ex.candidates or []) + (ex.labels or []):
                if lab in docs:
                    docs[lab].append(ex.text)
        for text, lab in pool or []:
            if lab in docs:
                docs[lab].append(text)
        texts = [" ".join(d) for d in docs.values()]
        self._vec = FeatureUnion(
            [
                ("words", TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))),
                ("chars", TfidfVectorizer(sublinear_tf=True, analyzer="char_wb", ngram_range=(3, 4))),
            ]
        ).fit(texts)
        self._matrix: Any = self._vec.transform(texts)

    def ranked(self, text: str) -> list[str]:
        """Every label, nearest to `text` first (ties in the task's label order)."""
        import numpy as np

        sims = (self._matrix @ self._vec.transform([text]).T).toarray().ravel()
        order = np.lexsort((np.arange(len(sims)), -sims))
        return [self.labels[i] for i in order]

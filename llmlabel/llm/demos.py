"""Retrieved few-shot demonstrations: for each text, the most similar rows of a labeled pool (`task.examples_file`).

Similarity is TF-IDF cosine (scikit-learn; word unigrams and bigrams, sublinear tf), which needs no model and
no network and finds the pool questions that share a text's key words ("How far ...", "Who invented ...").
A pool row whose text equals the row's own is never shown (labeling the pool itself must not see its answer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmlabel.config import Example, Task
from llmlabel.errors import ConfigError, InputError
from llmlabel.io.rows import iter_rows
from llmlabel.llm.prompts import Prompts


class DemoPool:
    def __init__(self, task: Task, label_column: str = "label") -> None:
        path = Path(task.examples_file or "")
        texts, labels = [], []
        prompts = Prompts(task, None)
        try:
            for n, row in enumerate(iter_rows(path), 2):
                text, label = prompts.row_text(row), row.get(label_column)
                if text is None or not str(text).strip() or label in (None, ""):
                    continue
                if str(label) not in task.labels:
                    raise ConfigError(
                        f"task.examples_file {path}: row {n} has label {label!r}, which is not in task.labels"
                    )
                texts.append(str(text))
                labels.append(str(label))
        except InputError as e:
            raise ConfigError(f"task.examples_file: {e}") from None
        if not texts:
            raise ConfigError(
                f"task.examples_file {path}: no rows with a '{task.text_column}' and a '{label_column}'; "
                "give a labeled file (columns text,label)"
            )
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.texts, self.labels, self.k = texts, labels, task.examples_k
        self._vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(texts)
        self._matrix: Any = self._vec.transform(texts)  # rows L2-normalised: a dot product is the cosine

    def nearest(self, text: str) -> list[Example]:
        """The k most similar pool rows, least similar first (the closest one sits right before the text)."""
        import numpy as np

        sims = (self._matrix @ self._vec.transform([text]).T).toarray().ravel()
        k = min(self.k + 1, len(sims))  # one spare: the text itself may be in the pool
        top = np.argpartition(-sims, k - 1)[:k]
        order = sorted(top.tolist(), key=lambda i: (-sims[i], i))
        picked = [i for i in order if self.texts[i] != text][: self.k]
        return [Example(text=self.texts[i], label=self.labels[i]) for i in reversed(picked)]

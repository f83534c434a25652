"""Distillation: a small scikit-learn student trained from LLM labels or candidate sets."""

from llmlabel.distill.labelsets import MultiLabelDistiller, TaxonomyDistiller
from llmlabel.distill.student import CandidateDistiller
from llmlabel.distill.training import load_model, predict_rows, save_model, train_from_labeled

__all__ = [
    "CandidateDistiller",
    "MultiLabelDistiller",
    "TaxonomyDistiller",
    "train_from_labeled",
    "save_model",
    "load_model",
    "predict_rows",
]

"""llmlabel: label, audit and distill text datasets with an ensemble of LLM judges."""

__version__ = "0.1.0"

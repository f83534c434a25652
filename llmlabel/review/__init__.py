"""The review loop: choose the rows a human should see, learn from their answers, state the dataset's accuracy.

A client of the pipeline, like auditing: it reads labeled (or audited) outputs; learning refits the aggregation
on the judges' answers those outputs hold (no request is sent). Modules:

- types: ReviewItem (a row for a human), HumanAnswer (their label);
- dataset: an output as the loop reads it, and the model's view of it after learning (refit, cross-fitting);
- selection: the expected value of a human label on each row, ActiveLab's score, seeded picks;
- stats: the Wilson interval with the finite-population correction, the dataset-accuracy interval, the
  accept threshold;
- loop: rounds, the saved state, merging answers, and `simulate` (rounds with a callable as the human).

docs/review.md explains the loop and what its interval means.
"""

"""The review loop: choose the rows a human should see, learn from their answers, state the dataset's accuracy.

A client of the pipeline, like auditing: it reads labeled (or audited) outputs and the response cache."""

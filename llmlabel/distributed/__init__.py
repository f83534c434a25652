"""Running the labeling pipeline on many processes and machines: the Ray engine (`--engine ray`)."""

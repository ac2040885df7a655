"""Running the matrix: the plan and each cell's identity, the cell's steps, jobs and their
executors, document shards, the lm-eval adapter, and what a running cell reports."""

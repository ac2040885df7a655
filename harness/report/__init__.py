"""Leaderboards from result files only (no torch, no GPU, no datasets): the board model,
paired significance, claims tables, and one writer per output format."""

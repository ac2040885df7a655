"""Results on disk: the store (one verifiable folder per finished cell), the typed record of a
cell, and the commands that read a run back (status, rescore)."""

# The contract's types hold results' (a plan's store, a cell's code info) and results' records
# hold the contract's reports: importing the contract first lets either side be imported first.
import harness.contract  # noqa: E402,F401  isort: skip

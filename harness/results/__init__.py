"""Results on disk: the store (one verifiable folder per finished cell), the typed record of a
cell, and the commands that read a run back (status, rescore)."""

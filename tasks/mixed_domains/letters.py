"""The letter world both tasks of this folder ask about: runs of the alphabet, wrapping after z."""

from __future__ import annotations

import random
import string
from typing import Any, Callable

ALPHABET = string.ascii_lowercase
STEPS = {"ascending": 1, "descending": -1, "skipping": 2}  # letters from one to the next
RUN_LENGTHS = range(3, 9)  # letters shown in a prompt


def next_letter(letter: str, domain: str) -> str:
    return ALPHABET[(ALPHABET.index(letter) + STEPS[domain]) % len(ALPHABET)]


def letter_run(domain: str, start: int, length: int) -> list[str]:
    letters = [ALPHABET[start]]
    while len(letters) < length:
        letters.append(next_letter(letters[-1], domain))
    return letters


def run_splits(key: str, test_size: int,
               document: Callable[[int, int, random.Random], dict[str, Any]]
               ) -> dict[str, list[dict[str, Any]]]:
    """Every (start letter, length) run, shuffled by `key`, made into a document each (drawing
    from the same generator): the first `test_size` are the test split, the rest the
    training split."""
    rng = random.Random(key)
    runs = [(start, length) for start in range(len(ALPHABET)) for length in RUN_LENGTHS]
    rng.shuffle(runs)
    documents = [document(start, length, rng) for start, length in runs]
    return {"test": documents[:test_size], "train": documents[test_size:]}

"""Words: the dictionary FUSE fits its adapter on, and which word each token belongs to.

FUSE represents text word by word (whitespace-separated), each word as the stack of its
subtoken embeddings. Both sides of a translation see the same text: the primary model's
tokens are decoded to it, the secondary model tokenises it, and every token of either side
is assigned to the whitespace word its first visible character falls in.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from harness.errors import DataError

WORD = re.compile(r"\S+")
SHIPPED_WORDS = Path(__file__).with_name("words.txt")
WIKITEXT = "wikitext-103"
WORDFREQ = "wordfreq"  # optionally "wordfreq:N", the N most frequent English words
WORDFREQ_WORDS = 50000
SCENE_WORLD = "scene-world"


@dataclass(frozen=True)
class Dictionary:
    """A deduplicated, lower-cased word list in a seeded order, and where it came from."""

    words: tuple[str, ...]
    source: str

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.words).encode()).hexdigest()


def read_dictionary(path: str | Path | None, seed: int) -> Dictionary:
    """The words of a text (split on whitespace, lower-cased, deduplicated, as the released
    code builds its dictionary), shuffled with `seed`.

    `path`: a text file; "wikitext-103", the paper's dictionary (the WikiText-103 training
    split from the Hugging Face hub); "wordfreq" or "wordfreq:N", the N (default 50,000)
    most frequent English words of the maintained `wordfreq` lists (`pip install wordfreq`),
    enough to determine a 1024-wide fit; "scene-world", the words of the zoo's scene world
    (harness.zoo.scenes); empty, the text shipped in the repository (the zoo's tokenizer
    corpus plus `harness/fuse/words.txt`, 724 common English words).
    """
    if path == WIKITEXT:
        text, source = _wikitext_103(), WIKITEXT
    elif path and str(path).split(":")[0] == WORDFREQ:
        text, source = _wordfreq(str(path)), str(path)
    elif path == SCENE_WORLD:
        from harness.zoo import scenes

        text, source = " ".join(scenes.vocabulary()), SCENE_WORLD
    else:
        from harness import zoo

        files = [Path(path).expanduser()] if path else [zoo.CORPUS, SHIPPED_WORDS]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DataError(f"dictionary {missing[0]} not found; pass -o dictionary=<word list file>")
        text = "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
        source = str(path) if path else "shipped"
    words = sorted(set(WORD.findall(text.lower())))
    if not words:
        raise DataError(f"dictionary {source} holds no words")
    random.Random(seed).shuffle(words)
    return Dictionary(tuple(words), source)


def _wikitext_103() -> str:
    from datasets import load_dataset

    try:
        rows = load_dataset("wikitext", "wikitext-103-raw-v1", split="train")
    except Exception as exc:  # datasets raises many types when the hub is unreachable
        raise DataError(f"cannot load the WikiText-103 dictionary ({type(exc).__name__}); "
                        f"pass a word list file with -o dictionary=<file>") from None
    return "\n".join(rows["text"])


def _wordfreq(name: str) -> str:
    _, _, count = name.partition(":")
    if count and not (count.isdigit() and int(count) > 0):
        raise DataError(f"dictionary {name}: the word count after 'wordfreq:' must be a positive integer")
    try:
        import wordfreq
    except ImportError:
        raise DataError("the wordfreq dictionary needs the wordfreq package: pip install wordfreq") from None
    return "\n".join(wordfreq.top_n_list("en", int(count) if count else WORDFREQ_WORDS))


def token_words(spans: Sequence[tuple[int, int]], text: str) -> list[int]:
    """The whitespace word (0-based) of every token given its character span in `text`:
    the word holding the token's first visible character; a token of blanks only belongs
    to the word before it (-1 when it comes first)."""
    starts = [m.start() for m in WORD.finditer(text)]
    words, previous = [], -1
    for start, end in spans:
        visible = next((i for i in range(start, min(end, len(text))) if not text[i].isspace()), None)
        if visible is not None:
            previous = bisect.bisect_right(starts, visible) - 1
        words.append(previous)
    return words


def decoded_spans(tokenizer: Any, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """(text, character span of every token): the decoded text and where each token's
    characters lie in it, from decoding growing prefixes of `ids`."""
    text = tokenizer.decode(list(ids))
    spans, end = [], 0
    for count in range(1, len(ids) + 1):
        start, end = end, len(tokenizer.decode(list(ids[:count])))
        spans.append((start, max(start, end)))
    return text, spans


def tokenize_spans(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """(token ids, character span of every token) of `text`, without special tokens."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [tuple(span) for span in encoded["offset_mapping"]]


def word_token_ids(tokenizer: Any, words: Sequence[str]) -> list[list[int]]:
    """Every word's token ids as it is tokenised inside a sentence, after a space (GPT-2
    splits "red" and " red" differently): the tokens of ". word" after those of "."."""
    lead = tokenizer(".", add_special_tokens=False)["input_ids"]
    batch = tokenizer([". " + word for word in words], add_special_tokens=False)["input_ids"]
    return [ids[len(lead):] if ids[:len(lead)] == lead else ids for ids in batch]


def printable_tokens(tokenizer: Any, vocab_size: int) -> list[bool]:
    """Which token ids a search may place: ordinary tokens that decode to printable ASCII
    (the released code excludes non-ASCII tokens; control characters such as newlines
    would also end a one-line caption). Rows past the tokenizer's vocabulary are excluded."""
    special = set(tokenizer.all_special_ids)
    allowed = []
    for token_id in range(vocab_size):
        if token_id >= len(tokenizer) or token_id in special:
            allowed.append(False)
            continue
        text = tokenizer.decode([token_id])
        allowed.append(bool(text.strip()) and all(32 <= ord(c) < 127 for c in text))
    return allowed


def word_start_token(tokenizer: Any, text: str) -> int:
    """A token that starts a new word showing `text` (" !" -> GPT-2's "Ġ!"), or the first
    token of `text` when the tokenizer needs more than one for that. Searches place it as
    AutoDAN's placeholder next token (the released code's "!") and as GCG's initial token
    (its "."): as a word of its own it is linearised where most candidates, which start
    words, will be; glued to the word before it, the correct adjoint would give it no
    gradient whenever it falls past that word's B-token count."""
    ids = tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    return int(ids[0]) if len(ids) == 1 else int(tokenizer(text, add_special_tokens=False)["input_ids"][0])

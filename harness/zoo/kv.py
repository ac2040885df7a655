"""The key-value arithmetic world of CALM's first experiment (Bansal et al. 2024, Table 1)
at tiny scale, and the two zoo models trained in it.

A seeded world of `N_KEYS` two-letter keys, each with a small integer value (1-5).
Three datasets share one expression generator (3-4 operands joined by + - *, evaluated
with the usual precedence), with the paper's formats:

- kv_substitution: "ca+qe*fo=" -> "2+3*5"   (the augmenting model's skill)
- numeric_arithmetic: "2+3*5=" -> "17"       (the anchor's skill)
- kv_arithmetic: "ca+qe*fo=" -> "17"         (the composition, learnt by neither)

(no spaces: one token per character, and the shortest sequences to train on two CPU cores)

`COMPOSITION_SHARE` of the keys form the composition set: CALM's training examples are KV
arithmetic over those keys only; every evaluation of a dataset with keys uses the other
(held-out) keys. Expressions are split between training and evaluation by a hash of their
text, so no evaluated expression was trained on by a zoo model or by CALM.

`harness-zoo/kv-augmenting` is trained on kv_substitution over every key (it memorises the
mapping); `harness-zoo/kv-anchor` on numeric_arithmetic only. Both are small Llamas with a
character-level tokenizer (one token per character, so numbers are digit strings), trained
deterministically on first use (seeded initialisation and data order) and
cached like every zoo model. The sizes and budgets are the smallest we found that still
learn their skill in a couple of minutes on two CPU cores; the models are far from
perfect at it, like the paper's (m_B solves 73.7% of numeric arithmetic).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

WORLD_SEED = 9
N_KEYS = 100
KEY_LENGTHS = (2,)
VALUES = range(1, 6)
OPERANDS = (3, 4)
OPERATORS = "+-*"
COMPOSITION_SHARE = 0.2
EVAL_BUCKET = 5  # expressions whose text hashes to 0 mod this are evaluation-only
DATASETS = ("kv_substitution", "numeric_arithmetic", "kv_arithmetic")
CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789+-*="
SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")

Dataset = Literal["kv_substitution", "numeric_arithmetic", "kv_arithmetic"]


@dataclass(frozen=True)
class KeyValueWorld:
    keys: tuple[str, ...]
    values: dict[str, int]
    composition_keys: tuple[str, ...]
    held_out_keys: tuple[str, ...]


@cache
def world(seed: int = WORLD_SEED) -> KeyValueWorld:
    rng = random.Random(seed)
    keys: list[str] = []
    while len(keys) < N_KEYS:
        key = "".join(rng.choice(CHARACTERS[:26]) for _ in range(rng.choice(KEY_LENGTHS)))
        if key not in keys:
            keys.append(key)
    values = {key: rng.choice(VALUES) for key in keys}
    composition = round(COMPOSITION_SHARE * N_KEYS)
    return KeyValueWorld(tuple(keys), values, tuple(keys[:composition]), tuple(keys[composition:]))


def _is_evaluation_text(text: str) -> bool:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % EVAL_BUCKET == 0


def _example(dataset: Dataset, operands: list[str], operators: list[str],
             kv: KeyValueWorld) -> dict[str, str]:
    keyed = dataset != "numeric_arithmetic"
    numbers = [str(kv.values[o]) if keyed else o for o in operands]
    expression = "".join(sum(([op, n] for op, n in zip(operators, operands[1:])), [operands[0]]))
    numeric = "".join(sum(([op, n] for op, n in zip(operators, numbers[1:])), [numbers[0]]))
    answer = str(eval(numeric))  # digits and + - * only: built above, never user input
    target = numeric if dataset == "kv_substitution" else answer
    return {"prompt": f"{expression}=", "target": target}


def examples(dataset: Dataset, split: Literal["train", "composition", "test"], count: int,
             seed: int = WORLD_SEED) -> list[dict[str, str]]:
    """`count` distinct examples of `dataset`, deterministic in (dataset, split, seed).

    split "train": what a zoo model learns its skill from (every key, training expressions);
    "composition": CALM's training set (kv_arithmetic over the composition keys);
    "test": evaluation expressions, over the held-out keys for datasets with keys.
    """
    kv = world(seed)
    if split == "composition" and dataset != "kv_arithmetic":
        raise ValueError("the composition set is KV arithmetic")
    pool = {"train": kv.keys, "composition": kv.composition_keys, "test": kv.held_out_keys}[split]
    if dataset == "numeric_arithmetic":
        pool = tuple(str(v) for v in VALUES)
    rng = random.Random(f"{seed}/{dataset}/{split}")
    wanted_evaluation = split == "test"
    chosen: dict[str, dict[str, str]] = {}
    while len(chosen) < count:
        size = rng.choice(OPERANDS)
        operands = [rng.choice(pool) for _ in range(size)]
        operators = [rng.choice(OPERATORS) for _ in range(size - 1)]
        example = _example(dataset, operands, operators, kv)
        if _is_evaluation_text(example["prompt"]) == wanted_evaluation:
            chosen.setdefault(example["prompt"], example)
    return list(chosen.values())


# ------------------------------------------------------------------------- zoo models

@dataclass(frozen=True)
class Curriculum:
    """How a key-value zoo model is trained."""

    dataset: Dataset
    examples: int
    steps: int
    batch_size: int
    lr: float
    intermediate_factor: int = 4


CURRICULA = {
    "kv-augmenting": Curriculum("kv_substitution", examples=20_000, steps=800, batch_size=256,
                                lr=5e-3),
    "kv-anchor": Curriculum("numeric_arithmetic", examples=12_000, steps=300, batch_size=256,
                            lr=3e-3),
}


def training_identity(name: str) -> dict[str, Any]:
    """What enters the zoo fingerprint of a key-value model besides its recipe."""
    return {"curriculum": asdict(CURRICULA[name]), "world": [WORLD_SEED, N_KEYS, list(KEY_LENGTHS),
            list(VALUES), list(OPERANDS), OPERATORS, COMPOSITION_SHARE, EVAL_BUCKET], "chars": CHARACTERS}


def character_tokenizer() -> Any:
    """One token per character of `CHARACTERS`, plus Llama-style specials; no BOS added."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIALS, *CHARACTERS])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    raw.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", model_max_length=64)


def build(name: str, hidden_size: int, layers: int, heads: int, seed: int, out: Path) -> None:
    """Train the key-value zoo model `name` and save it (with its tokenizer) to `out`."""
    import torch

    curriculum = CURRICULA[name]
    # one thread: tiny matrices gain nothing from more, and spinning threads lose a lot
    # on shared cores; one fixed thread count also keeps the result reproducible
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train(name, curriculum, hidden_size, layers, heads, seed, out)
    finally:
        torch.set_num_threads(threads)


def _train(name: str, curriculum: Curriculum, hidden_size: int, layers: int, heads: int,
           seed: int, out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, get_scheduler

    tokenizer = character_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size,
                         intermediate_size=hidden_size * curriculum.intermediate_factor,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=heads, max_position_embeddings=64,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    ids, labels = _encode(tokenizer, examples(curriculum.dataset, "train", curriculum.examples))
    optimizer = torch.optim.AdamW(model.parameters(), lr=curriculum.lr, weight_decay=0.0)
    schedule = get_scheduler("cosine", optimizer, num_warmup_steps=curriculum.steps // 20,
                             num_training_steps=curriculum.steps)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(curriculum.steps):
        rows = torch.randint(len(ids), (curriculum.batch_size,), generator=order)
        batch_ids, batch_labels = ids[rows], labels[rows]
        width = int((batch_ids != tokenizer.pad_token_id).sum(1).max())
        loss = model(input_ids=batch_ids[:, :width], labels=batch_labels[:, :width]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "zoo_training.json").write_text(json.dumps(
        training_identity(name) | {"final_loss": float(loss.detach())}, indent=2, sort_keys=True))


def _encode(tokenizer: Any, rows: list[dict[str, str]]) -> tuple[Any, Any]:
    """Right-padded ids and target-only labels (prompt and padding ignored), EOS appended."""
    import torch

    encoded = []
    for row in rows:
        prompt = tokenizer(row["prompt"]).input_ids
        target = tokenizer(row["target"]).input_ids + [tokenizer.eos_token_id]
        encoded.append((prompt + target, [-100] * len(prompt) + target))
    width = max(len(i) for i, _ in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    for position, (i, l) in enumerate(encoded):
        ids[position, :len(i)] = torch.tensor(i)
        labels[position, :len(l)] = torch.tensor(l)
    return ids, labels

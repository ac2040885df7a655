"""Zoo experts: tiny zoo models pretrained on one synthetic domain each.

The random zoo models answer nothing, so a leaderboard of them shows no difference between
methods. An expert is a zoo recipe (architecture, tokenizer, seed) whose freshly built
weights are then pretrained for a few hundred steps on plain text of one domain:

- "ascending": runs of the alphabet forwards, wrapping after z ("w x y z a b"),
- "descending": the same runs backwards ("b a z y x w").

The two domains share every token but contradict each other: after "... f" an ascending
expert is sure of "g", a descending one of "e". Each expert finds the other domain's text
improbable (high perplexity), which is exactly the signal PackLLM weights members by, while
a uniform ensemble averages a confident right answer with a confident wrong one. The
`mixed_domains` task asks for the next letter of both kinds of run.

Training is deterministic (fixed seeds, data drawn from a seeded generator) and takes
seconds on a CPU core; the result is cached like every zoo model.
"""

from __future__ import annotations

import random
import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ALPHABET = string.ascii_lowercase
DOMAINS = ("ascending", "descending")


@dataclass(frozen=True)
class DomainPretraining:
    domain: str  # one of DOMAINS
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    min_letters: int = 4
    max_letters: int = 14
    seed: int = 0


# Zoo recipe name -> its pretraining; the recipes themselves live in harness.zoo.RECIPES.
PRETRAINING: dict[str, DomainPretraining] = {
    "expert-ascending": DomainPretraining("ascending"),
    "expert-descending": DomainPretraining("descending"),
}


def letter_run(domain: str, start: int, length: int) -> list[str]:
    """`length` letters of the alphabet from index `start`, forwards for "ascending" and
    backwards for "descending", wrapping around. (The task plugin draws its documents on its
    own: plugins do not import the zoo, and a benchmark should not share code with a
    pretraining corpus.)"""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; domains: {', '.join(DOMAINS)}")
    step = 1 if domain == "ascending" else -1
    return [ALPHABET[(start + step * i) % len(ALPHABET)] for i in range(length)]


def pretraining_fingerprint(name: str) -> dict[str, Any] | None:
    """What enters a zoo recipe's fingerprint for its pretraining (None: not an expert)."""
    plan = PRETRAINING.get(name)
    return None if plan is None else asdict(plan)


def pretrain(name: str, folder: Path) -> None:
    """Pretrain the freshly built zoo model in `folder` on its domain, in place."""
    import torch

    plan = PRETRAINING[name]
    threads = torch.get_num_threads()
    # A 64-wide model gains nothing from intra-op threads, and on a busy machine their
    # synchronisation costs more than the arithmetic.
    torch.set_num_threads(1)
    try:
        _pretrain(plan, folder)
    finally:
        torch.set_num_threads(threads)


def _pretrain(plan: DomainPretraining, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rng = random.Random(plan.seed)
    torch.manual_seed(plan.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan.lr)
    model.train()
    for _ in range(plan.steps):
        texts = [" ".join(letter_run(plan.domain, rng.randrange(len(ALPHABET)),
                                     rng.randint(plan.min_letters, plan.max_letters)))
                 for _ in range(plan.batch_size)]
        batch = _right_padded(tokenizer, texts, pad)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        logits = model(**batch).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 labels[:, 1:].reshape(-1), ignore_index=-100)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(folder)


def _right_padded(tokenizer: Any, texts: list[str], pad: int) -> dict[str, Any]:
    import torch

    encoded = [tokenizer(text)["input_ids"] for text in texts]
    width = max(len(ids) for ids in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, tokens in enumerate(encoded):
        ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
    return {"input_ids": ids, "attention_mask": mask}

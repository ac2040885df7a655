"""What the PackLLM parity tests and their fixtures share: the rules and cases compared,
random members, the official MMLU option format, question-like texts and the official
tokenizer markers."""

from __future__ import annotations

import re
from typing import Any

import torch
from parity.parity_support import seeded_

from harness.fusion._weights import ExpertContrast, GreedyGrid, PerplexitySoftmax, TopOne, Weighting

# The official `fusion` names and our rules; every rule with 2-4 members, DExperts with 3.
RULES = {"sim": PerplexitySoftmax(), "opt": GreedyGrid(), "ensemble": Weighting(),
         "top1": TopOne(), "dexperts": ExpertContrast(alpha=1.0),
         "dexperts-opt": ExpertContrast(alpha=None)}
CASES = [(fusion, members) for fusion in ("sim", "opt", "ensemble", "top1") for members in (2, 3, 4)]
CASES += [("dexperts", 3), ("dexperts-opt", 3)]


def random_lm(kind: str, vocab: int, seed: int) -> Any:
    """A small causal LM with sharp random logits (init std 0.3), so members disagree."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if kind == "gpt2":
        config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=256,
                            initializer_range=0.3)
        return GPT2LMHeadModel(config).eval()
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=256, initializer_range=0.3)
    return LlamaForCausalLM(config).eval()


def seeded_lm(kind: str, vocab: int, seed: int) -> Any:
    """`random_lm` with every weight drawn by `seeded_` (std 0.3): the same model on every
    machine, so fixtures computed from it stay valid."""
    return seeded_(random_lm(kind, vocab, seed), seed, 0.3 * 3 ** 0.5)


# What the official class table gives Llama and GPT-2 tokenizers.
MARKERS = {"tiny-llama": "▁", "tiny-gpt2": "Ġ"}


def mmlu_items() -> list[tuple[str, list[str]]]:
    """(question, choices) of the MMLU sample the harness ships."""
    import csv

    from harness.tasks.mmlu import FIXTURES

    rows = [row for path in sorted(FIXTURES.glob("data/*/*.csv"))
            for row in csv.reader(path.open(encoding="utf-8"))]
    return [(row[0], row[1:5]) for row in rows]


def question_texts() -> list[str]:
    """Question-like texts: the shipped MMLU and GSM8K questions, then corpus sentences."""
    import json

    from harness.tasks.gsm8k import FIXTURES as GSM8K
    from harness.zoo import CORPUS

    texts = [question for question, _ in mmlu_items()]
    texts += [json.loads(line)["question"] for path in sorted(GSM8K.glob("*.jsonl"))
              for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts += [s.strip() for s in re.split(r"(?<=[.?!])\s+", CORPUS.read_text(encoding="utf-8"))
              if len(s.split()) >= 4]
    return texts


def official_mmlu_items(count: int) -> list[tuple[str, list[str]]]:
    """(question, options) in the official MMLU format (get_task.py): the question with its
    choices listed, options the full "A. <choice>" strings."""
    return [("Question: " + question.strip() + "\nChoices:\n" + "\n".join(options), options)
            for question, choices in mmlu_items()[:count]
            for options in [[f"{letter}. {choice}" for letter, choice in zip("ABCD", choices)]]]

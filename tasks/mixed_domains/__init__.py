"""`mixed_domains`: next-letter prediction over two synthetic domains that contradict each other.

A small, offline, trained demonstration task: the documents are letter runs of the alphabet,
forwards ("ascending": "c d e f" -> "g") or backwards ("descending": "f e d c" -> "b"),
wrapping after z. Each run asks for its next letter among four choices: the right one, the
letter the *other* direction would continue with (what an expert of the wrong domain is sure
of), and two others. lm-eval scores it as a multiple-choice task (the choice with the highest
log-likelihood after the prompt; accuracy), one subtask per domain, pooled like MMLU's subjects.

The zoo's `expert-ascending` and `expert-descending` are pretrained on one domain each, so a
pack of both shows what composition buys: each expert alone gets about half right, a uniform
ensemble averages confident right and confident wrong answers, PackLLM's perplexity weights
follow the expert that finds the prompt probable.

The data are generated, not shipped: every (domain, start letter, length) run of 3-8 letters,
shuffled with `seed`, the first `test_size` of each domain as the test split and the rest as
the training split (no prompt is in both). Every data mode (`hf`, `local`, `embedded`) reads
the same generated documents; nothing is downloaded.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from functools import partial
from typing import Any

from harness.api import (LmEvalPlan, Metric, TaskContext, TaskSpec, at_least,
                         dataset_dict, hookimpl, option)

ALPHABET = string.ascii_lowercase
DOMAINS = ("ascending", "descending")
RUN_LENGTHS = range(3, 9)  # letters shown in a prompt
CHOICES = 4
SUBTASK_PREFIX = "mixed_domains_"


@dataclass(frozen=True)
class MixedDomainsOptions:
    domains: tuple[str, ...] = option(DOMAINS, "the domains evaluated (and trained on)")
    test_size: int = option(60, "test documents per domain; the remaining runs are the training split")
    seed: int = option(0, "shuffles the runs into splits and draws the distractor letters")

    def __post_init__(self) -> None:
        at_least(self, test_size=1)
        unknown = [d for d in self.domains if d not in DOMAINS]
        if unknown or not self.domains:
            raise ValueError(f"domains must be a non-empty subset of {', '.join(DOMAINS)}, "
                             f"got {', '.join(self.domains) or 'none'}")
        runs = len(ALPHABET) * len(RUN_LENGTHS)
        if self.test_size >= runs:
            raise ValueError(f"test_size must leave training runs: each domain has {runs} runs")


def next_letter(letter: str, domain: str) -> str:
    step = 1 if domain == "ascending" else -1
    return ALPHABET[(ALPHABET.index(letter) + step) % len(ALPHABET)]


def letter_run(domain: str, start: int, length: int) -> list[str]:
    letters = [ALPHABET[start]]
    while len(letters) < length:
        letters.append(next_letter(letters[-1], domain))
    return letters


def document(domain: str, start: int, length: int, rng: random.Random) -> dict[str, Any]:
    """One run as a multiple-choice document; the answer's position is drawn by `rng`."""
    run = letter_run(domain, start, length)
    other = "descending" if domain == "ascending" else "ascending"
    answer, contradiction = next_letter(run[-1], domain), next_letter(run[-1], other)
    rest = [c for c in ALPHABET if c not in (answer, contradiction)]
    choices = [answer, contradiction] + rng.sample(rest, CHOICES - 2)
    rng.shuffle(choices)
    return {"domain": domain, "prompt": " ".join(run), "choices": choices,
            "answer": choices.index(answer)}


def domain_splits(domain: str, test_size: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Every run of the domain, shuffled by `seed`: the first `test_size` are the test split."""
    rng = random.Random(f"{seed}-{domain}")
    runs = [(start, length) for start in range(len(ALPHABET)) for length in RUN_LENGTHS]
    rng.shuffle(runs)
    documents = [document(domain, start, length, rng) for start, length in runs]
    return {"test": documents[:test_size], "train": documents[test_size:]}


def load_domain(domain: str, test_size: int, seed: int, **_: Any) -> Any:
    return dataset_dict(domain_splits(domain, test_size, seed))


def subtask_config(domain: str, options: MixedDomainsOptions) -> dict[str, Any]:
    return {
        "task": f"{SUBTASK_PREFIX}{domain}",
        "custom_dataset": partial(load_domain, domain, options.test_size, options.seed),
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{prompt}}",
        "doc_to_choice": "choices",
        "doc_to_target": "answer",
        "target_delimiter": " ",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def lm_eval_plan(ctx: TaskContext) -> LmEvalPlan:
    options: MixedDomainsOptions = ctx.options
    return LmEvalPlan(tasks=[subtask_config(d, options) for d in options.domains], num_fewshot=0,
                      uses_stock_tasks=False)


def training_examples(ctx: TaskContext) -> list[dict[str, str]]:
    """The training runs of the chosen domains, interleaved, as prompt -> " <next letter>"."""
    options: MixedDomainsOptions = ctx.options
    splits = [domain_splits(d, options.test_size, options.seed)["train"] for d in options.domains]
    interleaved = [doc for group in zip(*splits) for doc in group]
    return [{"prompt": doc["prompt"], "target": " " + doc["choices"][doc["answer"]]}
            for doc in interleaved]


@hookimpl
def harness_tasks() -> list[TaskSpec]:
    return [TaskSpec(
        name="mixed_domains",
        description="Synthetic next-letter runs, alphabet forwards vs backwards (domains that "
                    "contradict each other), 4-way multiple choice; accuracy.",
        headline=Metric("acc,none", "accuracy"),
        lm_eval=lm_eval_plan,
        local_format="none: the documents are generated from the seed in every data mode",
        options=MixedDomainsOptions,
        training_examples=training_examples,
        generated_data=True,
    )]

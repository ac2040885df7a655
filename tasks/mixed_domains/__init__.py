"""`mixed_domains`: next-letter prediction over synthetic domains that contradict each other.

A small, offline, trained demonstration task: the documents are letter runs of the alphabet,
forwards ("ascending": "c d e f" -> "g"), backwards ("descending": "f e d c" -> "b") or
forwards two at a time ("skipping": "a c e g" -> "i"), wrapping after z. Each run asks for
its next letter among four choices: the right one and the likeliest wrong ones. For an
ascending or descending run that is the letter the *other* direction would continue with
(what an expert of the wrong domain is sure of) and two others; for a skipping run, the
slips of a careless copyist, three and four letters ahead, and one other. lm-eval scores it
as a multiple-choice task (the choice with the highest log-likelihood after the prompt;
accuracy), one subtask per domain, pooled like MMLU's subjects.

The zoo's `expert-ascending` and `expert-descending` are pretrained on one domain each, so a
pack of both shows what composition buys on the default two domains: each expert alone gets
about half right, a uniform ensemble averages confident right and confident wrong answers,
PackLLM's perplexity weights follow the expert that finds the prompt probable. With
`-O domains=ascending,descending,skipping` and the `overlap-*` experts (each also trained on
skipping runs copied with its own slip), no single expert answers the skipping runs, so
routing to one member cannot either, while fusing both members' logits can (the
`packllm_claims` suite).

The data are generated, not shipped: every (domain, start letter, length) run of 3-8 letters,
shuffled with `seed`, the first `test_size` of each domain as the test split and the rest as
the training split (no prompt is in both). Every data mode (`hf`, `local`, `embedded`) reads
the same generated documents; nothing is downloaded. The `answer_form` task
(`answer_form.py`) asks the same alphabet in a prescribed answer form.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from harness.api import (LmEvalPlan, Metric, TaskContext, TaskSpec, at_least, dataset_dict,
                         hookimpl, option)

from .answer_form import answer_form_task
from .letters import ALPHABET, RUN_LENGTHS, STEPS, letter_run, next_letter, run_splits

DOMAINS = tuple(STEPS)
DEFAULT_DOMAINS = ("ascending", "descending")
SLIPS = (3, 4)  # a skipping run's likeliest wrong continuations: letters ahead of the last
CHOICES = 4
SUBTASK_PREFIX = "mixed_domains_"


@dataclass(frozen=True)
class MixedDomainsOptions:
    domains: tuple[str, ...] = option(DEFAULT_DOMAINS, "the domains evaluated (and trained on): "
                                                       f"any of {', '.join(DOMAINS)}")
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


def document(domain: str, start: int, length: int, rng: Any) -> dict[str, Any]:
    """One run as a multiple-choice document; the answer's position is drawn by `rng`."""
    run = letter_run(domain, start, length)
    answer = next_letter(run[-1], domain)
    if domain == "skipping":
        wrong = [letter_run("ascending", ALPHABET.index(run[-1]), slip + 1)[-1] for slip in SLIPS]
    else:
        wrong = [next_letter(run[-1], "descending" if domain == "ascending" else "ascending")]
    rest = [c for c in ALPHABET if c != answer and c not in wrong]
    choices = [answer, *wrong] + rng.sample(rest, CHOICES - 1 - len(wrong))
    rng.shuffle(choices)
    return {"domain": domain, "prompt": " ".join(run), "choices": choices,
            "answer": choices.index(answer)}


def domain_splits(domain: str, test_size: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Every run of the domain, shuffled by `seed`: the first `test_size` are the test split."""
    return run_splits(f"{seed}-{domain}", test_size,
                      lambda start, length, rng: document(domain, start, length, rng))


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
    return [answer_form_task(), TaskSpec(
        name="mixed_domains",
        description="Synthetic next-letter runs, alphabet forwards vs backwards (domains that "
                    "contradict each other; optionally skipping runs), 4-way multiple choice; "
                    "accuracy.",
        headline=Metric("acc,none", "accuracy"),
        lm_eval=lm_eval_plan,
        local_format="none: the documents are generated from the seed in every data mode",
        options=MixedDomainsOptions,
        training_examples=training_examples,
        generated_data=True,
    )]

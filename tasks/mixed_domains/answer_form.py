"""`answer_form`: the alphabet's next letter, answered in a prescribed form (alignment as form).

Aligner's claim (Zhou et al., arXiv 2312.05503) is that aligning a pretrained model is mostly
learning a *form* (a response style), which one global prefix token can carry. This task
asks for exactly that and nothing else: the question is an ascending run ("c d e f ?"), the
answer its next letter ("g"), which the zoo's `expert-forms` already knows, and the answer
must come in the form `-O form=` names:

- `bare`: "g",
- `answer_is`: "the answer is g .",
- `after` (default): "after f comes g .".

`expert-forms` was pretrained on all three (the bare letter most often), so greedy decoding
gives the bare letter: right content, wrong form. Adaptation fitted on the training split
(other runs in the asked form) has to move the form and keep the content. Greedy generation
up to the end of the answer; per document, `exact_match` (form and letter both right, the
headline), `form` (the asked form, whatever the letters) and `content` (the right letter in
any of the three forms). The knowledge contrast, where a prefix cannot help, is
`mixed_domains`' descending runs on the ascending expert.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from harness.api import (Capability, LmEvalPlan, Metric, TaskContext, TaskSpec, at_least,
                         dataset_dict, option)

from .letters import ALPHABET, RUN_LENGTHS, letter_run, next_letter, run_splits

FORMS = {"bare": "{answer}", "answer_is": "the answer is {answer} .",
         "after": "after {last} comes {answer} ."}
Form = Literal["bare", "answer_is", "after"]


@dataclass(frozen=True)
class AnswerFormOptions:
    form: Form = option("after", f"the answer form asked for: {', '.join(FORMS)}")
    test_size: int = option(60, "test questions; the remaining runs are the training split")
    seed: int = option(0, "shuffles the runs into splits")
    max_gen_toks: int = option(12, "token budget per answer")

    def __post_init__(self) -> None:
        at_least(self, test_size=1, max_gen_toks=1)
        runs = len(ALPHABET) * len(RUN_LENGTHS)
        if self.test_size >= runs:
            raise ValueError(f"test_size must leave training runs: there are {runs} runs")


def question(start: int, length: int, form: str) -> dict[str, Any]:
    run = letter_run("ascending", start, length)
    answer = next_letter(run[-1], "ascending")
    return {"prompt": " ".join(run) + " ?", "last": run[-1], "answer": answer,
            "target": FORMS[form].format(last=run[-1], answer=answer)}


def splits(form: str, test_size: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    return run_splits(f"{seed}-answer-form", test_size,
                      lambda start, length, _: question(start, length, form))


def load_questions(form: str, test_size: int, seed: int, **_: Any) -> Any:
    return dataset_dict(splits(form, test_size, seed))


def _pattern(template: str, last: str, answer: str) -> re.Pattern[str]:
    escaped = re.escape(template).replace(r"\{last\}", "{last}").replace(r"\{answer\}", "{answer}")
    return re.compile(escaped.format(last=last, answer=answer))


def judge(form: str, doc: dict[str, Any], response: str) -> dict[str, float]:
    """Exact match, the asked form (any letters) and the right letter (any form)."""
    text = " ".join(response.split())
    in_form = bool(_pattern(FORMS[form], "[a-z]", "[a-z]").fullmatch(text))
    content = any(_pattern(template, doc["last"], doc["answer"]).fullmatch(text)
                  for template in FORMS.values())
    return {"exact_match": float(text == doc["target"]), "form": float(in_form),
            "content": float(content)}


def process_results(form: str, doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return judge(form, doc, results[0])


def lm_eval_plan(ctx: TaskContext) -> LmEvalPlan:
    options: AnswerFormOptions = ctx.options
    config = {
        "task": f"answer_form_{options.form}",
        "custom_dataset": partial(load_questions, options.form, options.test_size, options.seed),
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "target",
        "target_delimiter": " ",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": options.max_gen_toks,
                              "do_sample": False},
        "process_results": partial(process_results, options.form),
        "metric_list": [{"metric": name, "aggregation": "mean", "higher_is_better": True}
                        for name in ("exact_match", "form", "content")],
        "metadata": {"version": 1.0},
    }
    return LmEvalPlan(tasks=[config], num_fewshot=0, uses_stock_tasks=False)


def training_examples(ctx: TaskContext) -> list[dict[str, str]]:
    """The training questions with their answers in the asked form."""
    options: AnswerFormOptions = ctx.options
    return [{"prompt": doc["prompt"], "target": " " + doc["target"]}
            for doc in splits(options.form, options.test_size, options.seed)["train"]]


def answer_form_task() -> TaskSpec:
    return TaskSpec(
        name="answer_form",
        description="Synthetic alphabet questions answered in a prescribed form (alignment as "
                    "form, Aligner's claim); exact match of form and letter.",
        headline=Metric("exact_match,none", "exact match"),
        metrics=(Metric("form,none", "form"), Metric("content,none", "content")),
        lm_eval=lm_eval_plan,
        requires=frozenset({Capability.GENERATION}),
        local_format="none: the documents are generated from the seed in every data mode",
        options=AnswerFormOptions,
        training_examples=training_examples,
        generated_data=True,
    )

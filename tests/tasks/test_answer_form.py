"""`answer_form`: deterministic, disjoint splits of ascending questions, answers in the asked
form, and the three per-document scores (form and letter, form alone, letter alone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.contract import DataSource, TaskContext
from harness.tasks.mixed_domains import answer_form


def test_questions_are_deterministic_disjoint_and_in_the_asked_form() -> None:
    splits = answer_form.splits("after", 60, 0)
    assert splits == answer_form.splits("after", 60, 0) != answer_form.splits("after", 60, 1)
    assert len(splits["test"]) == 60 and len(splits["train"]) == 26 * 6 - 60
    assert not {d["prompt"] for d in splits["test"]} & {d["prompt"] for d in splits["train"]}
    for doc in splits["test"]:
        letters = doc["prompt"].removesuffix(" ?").split()
        assert all((ord(b) - ord(a)) % 26 == 1 for a, b in zip(letters, letters[1:]))
        assert doc["target"] == f"after {letters[-1]} comes {doc['answer']} ."
    context = TaskContext(answer_form.AnswerFormOptions(form="answer_is"), DataSource("embedded"),
                          Path("."), None, 0)
    example = answer_form.training_examples(context)[0]
    assert example["target"].startswith(" the answer is ") and example["prompt"].endswith(" ?")


@pytest.mark.parametrize("response, scores", [
    ("after f comes g .", (1, 1, 1)),
    ("  after f  comes g . ", (1, 1, 1)),  # whitespace is not form
    ("g", (0, 0, 1)),  # the base's bare letter: right content, wrong form
    ("the answer is g .", (0, 0, 1)),
    ("after f comes h .", (0, 1, 0)),  # right form, wrong letter
    ("after f comes g . after", (0, 0, 0)),
])
def test_each_answer_is_scored_for_form_and_content(response: str,
                                                     scores: tuple[int, int, int]) -> None:
    doc = {"last": "f", "answer": "g", "target": "after f comes g ."}
    judged = answer_form.judge("after", doc, response)
    assert (judged["exact_match"], judged["form"], judged["content"]) == scores


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="leave training runs"):
        answer_form.AnswerFormOptions(test_size=26 * 6)

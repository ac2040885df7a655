"""The complete real MMLU and GSM8K files load through the same code as the fixtures."""

from __future__ import annotations

from pathlib import Path

from harness.contract import DataSource, TaskContext
from harness.tasks import gsm8k, mmlu


def _context(options: object, data_root: Path) -> TaskContext:
    return TaskContext(options=options, data=DataSource("local", data_root), workdir=data_root,
                       limit=None, seed=0)


def test_real_mmlu_has_14042_test_and_285_dev_questions(shared_data: Path) -> None:
    plan = mmlu.lm_eval_plan(_context(mmlu.MmluOptions(), shared_data))
    assert len(plan.tasks) == 57
    test = dev = 0
    for spec in plan.tasks:
        splits = spec["custom_dataset"]()
        test, dev = test + len(splits["test"]), dev + len(splits["dev"])
        assert set(splits["test"][0]) == {"question", "subject", "choices", "answer"}
    assert (test, dev) == (14042, 285)


def test_real_gsm8k_has_1319_test_problems(shared_data: Path) -> None:
    plan = gsm8k.lm_eval_plan(_context(gsm8k.Gsm8kOptions(), shared_data))
    splits = plan.tasks[0]["custom_dataset"]()
    assert (len(splits["test"]), len(splits["train"])) == (1319, 7473)
    assert splits["test"][0]["answer"].split("#### ")[-1] == "18"

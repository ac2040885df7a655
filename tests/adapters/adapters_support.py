"""Helpers shared by the adapter tests (tests/ is on sys.path through the root conftest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.models import ModelRef
from harness.specs import BuildContext, DataSource, Metric, NoOptions, TaskSpec

TINY_LLAMA = "harness-zoo/tiny-llama"


def synthetic_task(train: list[dict[str, str]]) -> TaskSpec:
    """A task that only supplies training examples (evaluation is done by the test)."""
    def no_plan(ctx: Any) -> Any:
        raise AssertionError("not evaluated through lm-eval")

    return TaskSpec(name="synthetic", description="test task", headline=Metric("acc", "acc"),
                    lm_eval=no_plan, training_examples=lambda ctx: list(train))


def build_context(options: Any, task: TaskSpec, tmp_path: Path, seed: int = 1234) -> BuildContext:
    return BuildContext(models=[ModelRef(TINY_LLAMA, dtype="float32")], options=options, task=task,
                        task_options=NoOptions(), seed=seed, device="cpu", batch_size=1,
                        workdir=tmp_path / "work", data=DataSource("embedded"))


# ----------------------------------------------------------------------------- synthetic task

FIXED_ANSWER = " Answer: yes"


def format_task(n_train: int = 48, n_test: int = 16, seed: int = 0) -> tuple[list[dict[str, str]], list[str]]:
    """Answer every question with the same fixed phrase: random word salads from the zoo
    corpus as prompts, " Answer: yes" as target. The untrained tiny models never produce it."""
    import random

    from harness.zoo import CORPUS

    words = sorted(set(CORPUS.read_text(encoding="utf-8").lower().replace(".", " ").split()))
    rng = random.Random(seed)
    prompts = [f"Question: {' '.join(rng.choices(words, k=rng.randint(3, 7)))}?"
               for _ in range(n_train + n_test)]
    train = [{"prompt": p, "target": FIXED_ANSWER} for p in prompts[:n_train]]
    return train, prompts[n_train:]


def greedy_accuracy(model: Any, tokenizer: Any, prompts: list[str], target: str = FIXED_ANSWER) -> float:
    """Share of prompts whose greedy continuation starts with `target`."""
    import torch

    width = len(tokenizer(target, add_special_tokens=False).input_ids) + 1
    hits = 0
    model.eval()
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            out = model.generate(input_ids=ids, max_new_tokens=width, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            hits += text.strip().startswith(target.strip())
    return hits / len(prompts)

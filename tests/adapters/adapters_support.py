"""Helpers shared by the adapter tests (tests/ is on sys.path through the root conftest)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.contract import BuildContext, DataSource, Metric, ModelRef, NoOptions, TaskSpec

TINY_LLAMA = "harness-zoo/tiny-llama"
# The same tests run on a GPU (bf16 autocast in the fit) with HARNESS_TEST_DEVICE=cuda.
TEST_DEVICE = os.environ.get("HARNESS_TEST_DEVICE", "cpu")


def synthetic_task(train: list[dict[str, str]]) -> TaskSpec:
    """A task that only supplies training examples (evaluation is done by the test)."""
    def no_plan(ctx: Any) -> Any:
        raise AssertionError("not evaluated through lm-eval")

    return TaskSpec(name="synthetic", description="test task", headline=Metric("acc", "acc"),
                    lm_eval=no_plan, training_examples=lambda ctx: list(train))


def build_context(options: Any, task: TaskSpec, tmp_path: Path, seed: int = 1234) -> BuildContext:
    return BuildContext(models=[ModelRef(TINY_LLAMA, dtype="float32", device=TEST_DEVICE)],
                        options=options, task=task,
                        task_options=NoOptions(), seed=seed, device=TEST_DEVICE, batch_size=1,
                        workdir=tmp_path / "work", data=DataSource("embedded"),
                        cache_root=tmp_path / "cache")



# ----------------------------------------------------------------------------- synthetic task

LABELS = (" one", " two", " four", " many")  # single tokens of the tiny Llama tokenizer
ANSWER = " four"


def label_task(n_train: int = 48, n_test: int = 16, seed: int = 0) -> tuple[list[dict[str, str]], list[str]]:
    """Map every question to the same label: word salads from the zoo corpus as prompts,
    " four" as target. The untrained tiny model does not prefer that label."""
    import random

    from harness.zoo import CORPUS

    words = sorted(set(CORPUS.read_text(encoding="utf-8").lower().replace(".", " ").split())
                   - {label.strip() for label in LABELS})
    rng = random.Random(seed)
    prompts = [f"Question: {' '.join(rng.choices(words, k=rng.randint(3, 7)))}? Answer:"
               for _ in range(n_train + n_test)]
    return [{"prompt": p, "target": ANSWER} for p in prompts[:n_train]], prompts[n_train:]


def label_accuracy(model: Any, tokenizer: Any, prompts: list[str]) -> float:
    """Share of prompts whose most likely label (next-token logit, as lm-eval's letter
    scoring) is ANSWER."""
    import torch

    label_ids = [tokenizer(label, add_special_tokens=False).input_ids for label in LABELS]
    assert all(len(ids) == 1 for ids in label_ids), "labels must be single tokens"
    columns = [ids[0] for ids in label_ids]
    model.eval()
    hits = 0
    with torch.no_grad():
        for prompt in prompts:
            input_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.device)
            logits = model(input_ids=input_ids).logits
            hits += LABELS[int(logits[0, -1, columns].argmax())] == ANSWER
    return hits / len(prompts)

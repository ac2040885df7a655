"""Training data: examples from the task's training split or an Alpaca JSON file,
tokenised exactly as lm-eval will see them (image examples through the processor)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.contract import BuildContext, MethodSpec, TaskContext, TaskSpec
from harness.data import read_json_file
from harness.errors import DataError, HarnessError, UsageError
from harness.training.options import TrainingOptions

IGNORE_INDEX = -100
ALPACA_PROMPT = ("Below is an instruction that describes a task. Write a response that "
                 "appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
                 "### Response:")
ALPACA_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:")


def read_alpaca_json(path: Path) -> list[dict[str, str]]:
    """Prompt/target pairs from an Alpaca-format JSON list of {instruction, input, output}."""
    rows = read_json_file(path, "training data")
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{path}: expected a non-empty JSON list of Alpaca records")
    examples = []
    for number, row in enumerate(rows):
        if not isinstance(row, dict) or "instruction" not in row or "output" not in row:
            raise DataError(f"{path}: record {number} needs 'instruction' and 'output'")
        template = ALPACA_PROMPT_WITH_INPUT if row.get("input") else ALPACA_PROMPT
        examples.append({"prompt": template.format(instruction=row["instruction"],
                                                   input=row.get("input", "")),
                         "target": "\n" + str(row["output"])})
    return examples


def training_examples(ctx: BuildContext, options: TrainingOptions) -> tuple[list[dict[str, str]], str]:
    """(examples, description of their source) for a fit."""
    if options.training_data:
        return read_alpaca_json(Path(options.training_data)), f"alpaca-json:{options.training_data}"
    if ctx.task.training_examples is None:
        raise UsageError(f"task {ctx.task.name!r} has no training split; name a dataset with "
                         f"-o training_data=<alpaca.json>")
    task_ctx = TaskContext(options=ctx.task_options, data=ctx.data, workdir=ctx.workdir,
                           limit=None, seed=ctx.seed)
    examples = ctx.task.training_examples(task_ctx)
    if not examples:
        raise DataError(f"task {ctx.task.name!r} has no training examples in "
                        f"{ctx.data.describe()} (see its training options)")
    return examples, f"task-train:{ctx.task.name} ({ctx.data.describe()})"


def validation_examples(ctx: BuildContext) -> list[dict[str, str]]:
    """The task's validation split (empty when it has none)."""
    if ctx.task.validation_examples is None:
        return []
    task_ctx = TaskContext(options=ctx.task_options, data=ctx.data, workdir=ctx.workdir,
                           limit=None, seed=ctx.seed)
    return ctx.task.validation_examples(task_ctx)


def untrainable_reason(method: MethodSpec, options: Any, task: TaskSpec) -> str | None:
    """Why a training method cannot fit for this task (planning time), or None.

    A method that trains needs the task's training split or a dataset named in its options.
    """
    if method.training is None or task.training_examples is not None:
        return None
    if getattr(options, "training_data", ""):
        return None
    return "no training split (name one with -o training_data=<alpaca.json>)"


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    # The processor's image tensors (pixel_values, ...) with a batch dimension of 1, for
    # examples that carry an image.
    image_inputs: dict[str, Any] | None = None


def text_tokenizer(tokenizer_or_processor: Any) -> Any:
    """The text tokenizer of a processor, or the tokenizer itself."""
    return getattr(tokenizer_or_processor, "tokenizer", tokenizer_or_processor)


def encode_examples(tokenizer: Any, examples: list[dict[str, str]], max_seq_len: int,
                    loss_on_prompt: bool, image_token: str | None = None) -> list[EncodedExample]:
    """Token ids and labels; the target is split off the joint encoding as lm-eval does.

    `tokenizer` may be a vision-language processor: an example with an "image" (a file
    path) is then encoded as HFMultimodalLM encodes a request, the prompt's `<image>`
    placeholders replaced by `image_token` and expanded by the processor.
    """
    eos_id = text_tokenizer(tokenizer).eos_token_id
    eos = [eos_id] if eos_id is not None else []
    encoded = []
    for example in examples:
        image_inputs = None
        if "image" in example:
            prompt_ids, whole, image_inputs = encode_with_image(tokenizer, example, image_token)
        else:
            prompt_ids = text_tokenizer(tokenizer)(example["prompt"]).input_ids
            whole = text_tokenizer(tokenizer)(example["prompt"] + example["target"]).input_ids
        target_ids = whole[len(prompt_ids):] + eos
        ids = (prompt_ids + target_ids)[:max_seq_len]
        prompt_labels = prompt_ids if loss_on_prompt else [IGNORE_INDEX] * len(prompt_ids)
        labels = (prompt_labels + target_ids)[:max_seq_len]
        if any(label != IGNORE_INDEX for label in labels[1:]):
            encoded.append(EncodedExample(ids, labels, image_inputs))
    if not encoded:
        raise DataError(f"no training example keeps a target token within max_seq_len={max_seq_len}")
    return encoded


def encode_with_image(processor: Any, example: dict[str, str], image_token: str | None
                       ) -> tuple[list[int], list[int], dict[str, Any]]:
    """(prompt ids, prompt+target ids, image tensors) through the processor."""
    from lm_eval.models.hf_vlms import DEFAULT_IMAGE_PLACEHOLDER
    from lm_eval.models.utils import replace_placeholders
    from PIL import Image

    if not hasattr(processor, "image_processor") or image_token is None:
        raise HarnessError("a training example has an image but the model is not a "
                           "vision-language model with a processor")
    path = Path(example["image"])
    if not path.is_file():
        raise DataError(f"training image {path} not found")
    with Image.open(path) as opened:
        image = opened.convert("RGB")

    def encode(text: str) -> Any:
        text = replace_placeholders(text, DEFAULT_IMAGE_PLACEHOLDER, image_token, max_images=999)
        return processor(images=[image], text=[text], return_tensors="pt")

    prompt, whole = encode(example["prompt"]), encode(example["prompt"] + example["target"])
    image_inputs = {key: value for key, value in whole.items()
                    if key not in {"input_ids", "attention_mask"}}
    return prompt["input_ids"][0].tolist(), whole["input_ids"][0].tolist(), image_inputs


def data_digest(examples: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(examples, sort_keys=True).encode()).hexdigest()


def model_image_token(model: Any, tokenizer: Any) -> str | None:
    """The image token string HFMultimodalLM puts in place of `<image>`: the decoded
    `image_token_id` (or `image_token_index`) of the model's config."""
    token_id = (getattr(model.config, "image_token_id", None)
                or getattr(model.config, "image_token_index", None))
    if token_id is None:
        return None
    return text_tokenizer(tokenizer).decode([token_id], skip_special_tokens=False)


def padding_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0

"""Model references and loading through transformers' Auto classes.

A reference is a Hugging Face id, a local directory, or a zoo name; all three load
through the same `from_pretrained` call, so the path the tests exercise is the path real
models take.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from harness import zoo
from harness.content_cache import ContentCache, DamagedEntry, content_key
from harness.contract.specs import ModelRef
from harness.errors import ModelLoadError, UsageError, first_line
from harness.files import file_sha256
from harness.settings import cache_root


def model_location(ref: ModelRef) -> str:
    """What `from_pretrained` receives for `ref`: a local directory (a zoo model's, built on
    first use) or the hub id."""
    if zoo.is_zoo_id(ref.id):
        return str(zoo.zoo_path(ref.id))
    return ref.id


def model_identity(ref: ModelRef) -> dict[str, Any]:
    """What a fingerprint records of `ref`: the weights, tokenizer, dtype and device kind.

    A hub id is recorded with the revision asked for; pin one (`id@commit`) for results
    that must not follow upstream updates.
    """
    numerics = {"dtype": ref.resolved_dtype, "device": ref.device.split(":")[0]}
    if zoo.is_zoo_id(ref.id):
        return {"id": ref.id, "zoo_recipe": zoo.recipe_fingerprint(zoo.recipe_for(ref.id)),
                **numerics}
    local = Path(ref.id).expanduser()
    if local.is_dir():
        return {"id": str(local.resolve()), "files_sha256": weights_digest(local), **numerics}
    if ref.id.startswith(("/", "./", "../", "~")):
        raise ModelLoadError(f"{ref.id}: no such model folder")
    return {"id": ref.id, "revision": ref.revision, **numerics}


def weights_digest(directory: Path) -> str:
    """sha256 over the config, weight, tokenizer and generation files of a local model.

    A file's digest is memoised (a `ContentCache` entry) by its path, size and modification
    time, so a large local checkpoint is hashed once, not at every plan.
    """
    files = sorted(p for p in directory.iterdir()
                   if p.is_file() and (p.suffix in {".safetensors", ".bin", ".pt", ".model"}
                                       or p.name in {"config.json", "generation_config.json",
                                                     "special_tokens_map.json", "chat_template.jinja"}
                                       or p.name.startswith("tokenizer")))
    if not files:
        raise ModelLoadError(f"{directory}: no config.json or weight files found")
    memo = ContentCache(cache_root() / "weight-digests", suffix=".sha256", fan_out=True)
    total = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest = memo.fetch(content_key([str(path.resolve()), stat.st_size, stat.st_mtime_ns]),
                            _read_digest, functools.partial(_write_digest, source=path))
        total.update(f"{path.name}:{digest}".encode())
    return total.hexdigest()


def _read_digest(entry: Path) -> str:
    digest = entry.read_text()
    if len(digest) != 64:
        raise DamagedEntry(f"{entry}: not a sha256 digest")
    return digest


def _write_digest(entry: Path, source: Path) -> str:
    digest = file_sha256(source)
    entry.write_text(digest)
    return digest


def torch_dtype(name: str) -> Any:
    import torch

    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[name]
    except KeyError:
        raise UsageError(f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16") from None


def load_tokenizer(ref: ModelRef) -> Any:
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer, ref, "the tokenizer of")


def load_processor(ref: ModelRef) -> Any:
    """The processor of a vision-language model, from its directory as HFMultimodalLM
    loads it, so that a fit encodes images exactly as evaluation does."""
    from transformers import AutoProcessor

    return _from_pretrained(AutoProcessor, ref, "the processor of")


def _from_pretrained(auto_class: Any, ref: ModelRef, what: str, **kwargs: Any) -> Any:
    try:
        return auto_class.from_pretrained(model_location(ref), revision=ref.revision, **kwargs)
    except Exception as exc:  # transformers raises many types for a bad reference
        raise ModelLoadError(f"cannot load {what} {ref.id!r}: {first_line(exc)}") from exc


def load_causal_lm(ref: ModelRef, **kwargs: Any) -> tuple[Any, Any]:
    """(model, tokenizer) for a causal LM, in eval mode on the reference's device."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(ref)
    return load_weights(AutoModelForCausalLM, ref, "model", **kwargs), tokenizer


def is_vision_language(ref: ModelRef) -> bool:
    """Whether a reference names a vision-language checkpoint, decided from its config alone
    (zoo recipe, local config.json or the hub config) so that planning loads no weights."""
    if zoo.is_zoo_id(ref.id):
        return zoo.is_vision_language(zoo.recipe_for(ref.id))
    local = Path(ref.id).expanduser() / "config.json"
    try:
        if local.is_file():
            config = json.loads(local.read_text(encoding="utf-8"))
        else:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(ref.id, revision=ref.revision).to_dict()
    except Exception:  # an unreadable reference fails later, at load time, with a real message
        return False
    return "vision_config" in config


def load_vision_lm(ref: ModelRef, **kwargs: Any) -> Any:
    """A vision-language model (`AutoModelForImageTextToText`), eval mode, on its device.

    Its processor is saved beside it; lm-eval's HFMultimodalLM loads that from the model's
    `name_or_path`.
    """
    from transformers import AutoModelForImageTextToText

    return load_weights(AutoModelForImageTextToText, ref, "vision-language model", **kwargs)


def load_clip(ref: ModelRef) -> tuple[Any, Any, Any]:
    """(model, tokenizer, image processor) of a CLIP-style dual encoder (`AutoModel` with
    `get_text_features` / `get_image_features`, e.g. openai/clip-vit-base-patch32)."""
    from transformers import AutoImageProcessor, AutoModel

    model = load_weights(AutoModel, ref, "CLIP model")
    if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
        raise ModelLoadError(f"{ref.id!r} is a {type(model).__name__}, not a CLIP-style "
                             f"image-text model")
    return model, load_tokenizer(ref), _from_pretrained(AutoImageProcessor, ref, "the image processor of")


WeightsLoader = Callable[..., Any]  # (auto_class, ref, what, **from_pretrained kwargs) -> model


def load_weights(auto_class: Any, ref: ModelRef, what: str, **kwargs: Any) -> Any:
    """`auto_class.from_pretrained` in the reference's dtype, in eval mode on its device,
    its forward calls counted into the running cell's cost (harness.models.cost). Every
    transformers model the harness loads comes through here, through the loader that
    `route_weight_loads` installed, if any."""
    return _loader(auto_class, ref, what, **kwargs)


def route_weight_loads(wrap: Callable[[WeightsLoader], WeightsLoader]) -> None:
    """Send this process's weight loads through `wrap(plain loader)` from now on (a
    long-lived worker keeps models between jobs this way: harness.run.executors.worker)."""
    global _loader
    _loader = wrap(_load_plainly)


def _load_plainly(auto_class: Any, ref: ModelRef, what: str, **kwargs: Any) -> Any:
    from harness.models.cost import watch

    model = _from_pretrained(auto_class, ref, what, dtype=torch_dtype(ref.resolved_dtype),
                             **kwargs)
    model.to(ref.device).eval()
    return watch(model, ref.id)


_loader: WeightsLoader = _load_plainly

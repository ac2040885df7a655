"""AdaLink on a whole model: one link per input modality, before the transformer.

The text link transforms the output of the input-embedding module; the image link
transforms the image projector's output, i.e. the visual tokens before they are merged
into the sequence. Both are forward hooks, so the model stays the transformers model and
generation with the KV cache applies each link exactly once per token (each new token is
embedded once). In a VLM the text link also sees the image placeholder tokens' embeddings,
but the model overwrites those positions with the (image-linked) visual tokens, so each
position is transformed by its own modality's link only.

A caller may hand embeddings over directly (`inputs_embeds`), skipping the embedding
module. On a text-only model the text link then applies where they enter the decoder (a
pre-hook on `get_decoder()`, which receives the caller's embeddings unchanged). A VLM
builds its own `inputs_embeds` from text and image tokens before its decoder, so there
the caller's embeddings are refused: the text link needs input ids to tell text
positions from image placeholders.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

from harness.api import UsageError, freeze

from .config import AdaLinkOptions
from .layer import AdaLinkLayer

# Where common VLMs keep the module that maps vision features into the LM's embedding space.
PROJECTOR_NAMES = ("multi_modal_projector", "mm_projector", "connector", "visual_projection")


class AdaLink(nn.Module):
    """The trainable part: `links[modality]`, each an `AdaLinkLayer`."""

    def __init__(self, links: dict[str, AdaLinkLayer]) -> None:
        super().__init__()
        self.links = nn.ModuleDict(links)
        self._handles: list[Any] = []

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def find_image_projector(model: nn.Module, name: str = "") -> nn.Module | None:
    """The module named `name` (a dotted path), else the first with a usual projector name."""
    modules = dict(model.named_modules())
    if name:
        if name not in modules:
            raise UsageError(f"adalink: the model has no module {name!r} (image_projector)")
        return modules[name]
    for path, module in modules.items():
        if path.rsplit(".", 1)[-1] in PROJECTOR_NAMES:
            return module
    return None


def inject_adalink(model: PreTrainedModel, options: AdaLinkOptions) -> AdaLink:
    """Freeze `model`, hook a link per available modality, register it as `adalink`."""
    hidden_size = model.config.get_text_config().hidden_size
    projector = (find_image_projector(model, options.image_projector)
                 if "image" in options.modalities else None)
    modalities = [m for m in options.modalities if m == "text" or projector is not None]
    if not modalities:
        raise UsageError("adalink: only modality 'image' was asked for but the model has no "
                         "image projector")
    freeze(model)
    device = next(model.parameters()).device
    links = {m: AdaLinkLayer(hidden_size, options.rank, options.activation, options.bias,
                             options.up_init_std, options.down_init_std, device)
             for m in modalities}
    adalink = AdaLink(links)
    targets = {"text": model.get_input_embeddings(), "image": projector}
    for modality, link in links.items():
        target = targets[modality]
        assert target is not None  # modalities without a target were dropped above
        adalink._handles.append(target.register_forward_hook(_apply(link)))
    multimodal = model.config.get_text_config() is not model.config
    entry = model if multimodal else model.get_decoder()
    if "text" in links and "inputs_embeds" in inspect.signature(entry.forward).parameters:
        adalink._handles.append(entry.register_forward_pre_hook(
            _embeddings_entry(entry, links["text"], refuse=multimodal), with_kwargs=True))
    model.add_module("adalink", adalink)
    return adalink


def _apply(link: AdaLinkLayer) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            return link(output)
        raise UsageError(f"adalink: {type(module).__name__} returned {type(output).__name__}, "
                         "expected a tensor of embeddings")
    return hook


def _embeddings_entry(entry: nn.Module, link: AdaLinkLayer, refuse: bool) -> Callable[..., Any]:
    """A forward pre-hook for `entry` that links (or, with `refuse`, rejects) caller-supplied
    `inputs_embeds`; calls with input ids pass untouched (the embedding hook links them)."""
    position = list(inspect.signature(entry.forward).parameters).index("inputs_embeds")

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        positional = len(args) > position
        embeddings = args[position] if positional else kwargs.get("inputs_embeds")
        if embeddings is None:
            return None
        if refuse:
            raise UsageError(f"adalink: {type(module).__name__} was called with inputs_embeds; "
                             "on a vision-language model pass input_ids so the text link can "
                             "tell text positions from image placeholders")
        if positional:
            return (*args[:position], link(embeddings), *args[position + 1:]), kwargs
        return args, {**kwargs, "inputs_embeds": link(embeddings)}
    return hook

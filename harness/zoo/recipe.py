"""`ZooRecipe`: what a zoo model is, and `ZooTraining`: how a trained one learns.

Kept apart from `harness.zoo` so that the worlds (`experts`, `kv`, `scenes`, ...) can import
it while `harness.zoo` imports them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # harness.models imports the zoo, and harness.training the host's contract
    from harness.training.options import Optimisation


@dataclass(frozen=True)
class ZooRecipe:
    """One zoo model: architecture, tokenizer family, sizes and seed, and, for a model that
    is trained rather than left random, its `training` (corpus or curriculum and schedule).

    Every zoo model is built once into the zoo's `ContentCache`, keyed by the recipe's
    digest (`harness.zoo.recipe_fingerprint`: the card below, the shipped corpus, the towers
    of vision recipes and `training.identity`), and trained through `harness.training.optimise`
    on one thread: the world supplies the freshly initialised model, what is saved with it
    and the loss of each step (its data), the training path owns optimizer, schedule and step.

    A new world registers by adding a module `harness/zoo/<world>.py` that defines a
    `ZooTraining` subclass (a frozen dataclass) and a module-level `RECIPES` tuple of
    `ZooRecipe(..., training=<its training>)`, and by appending the module to `WORLDS` in
    `harness/zoo/__init__.py`. Nothing else dispatches on names: architecture-specific
    loading (`harness.models`) reads the recipe's `architecture`.
    """

    name: str
    architecture: str  # "llama", "gpt2", "llava" (vision tower + projector + llama), "clip" or
    # "bert" (the scene world's sequence classifier)
    tokenizer: str  # "metaspace", "bytelevel", "clip", "kv" (trained key-value models), or
    # "scene-bytelevel" / "scene-clip" (the scene world's models, trained on its sentences)
    vocab_size: int
    hidden_size: int
    layers: int
    heads: int
    kv_heads: int
    seed: int
    description: str
    training: "ZooTraining | None" = None  # None: the model is left at its seeded initialisation

    def card(self) -> dict[str, Any]:
        """The recipe without its training (which enters the digest as `training.identity`):
        what the digest's "recipe" and the saved `zoo_recipe.json` hold."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "training"}


@dataclass(frozen=True)
class Prepared:
    """A model ready to train: freshly initialised (seeded), the objects saved beside it
    (`save_pretrained`: tokenizer, processors) and the loss of each step, which draws the
    step's batch itself."""

    model: Any
    companions: tuple[Any, ...]
    loss: Callable[[int], Any]


class ZooTraining(ABC):
    """How a world trains a recipe. Subclasses are frozen dataclasses whose fields (corpus,
    budget, schedule) all enter the recipe's digest through `identity`."""

    @property
    @abstractmethod
    def optimisation(self) -> "Optimisation":
        """Optimizer budget and schedule (harness.training)."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What enters the recipe's digest for this training, besides the recipe's card."""

    @abstractmethod
    def prepare(self, recipe: ZooRecipe) -> Prepared:
        """The seeded model, its companions and the loss of each step."""

    def finish(self, recipe: ZooRecipe, prepared: Prepared, final_loss: float, out: Path) -> None:
        """Anything to record once the model is trained and saved in `out`."""

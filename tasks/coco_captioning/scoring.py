"""COCO caption metrics with pycocoevalcap, on the merged prediction set, tokenised once.

pycocoevalcap's PTB tokenizer and SPICE write temporary files next to their own jars,
i.e. into site-packages. We load those two modules from a copy in the harness cache (their
jars linked, not copied), so nothing is written into the installed package; BLEU, METEOR,
ROUGE-L and CIDEr are used from the package as they are. CIDEr's IDF comes from the
references of the images being scored, which is why scoring always sees the whole set.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.machinery
import importlib.metadata as md
import importlib.util
import io
import logging
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, NamedTuple

from harness.api import DataError, cache_root

log = logging.getLogger(__name__)

BLEU_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")
METRIC_KEYS = (*BLEU_KEYS, "METEOR", "ROUGE_L", "CIDEr", "SPICE")
CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


def package_dir() -> Path:
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("COCO captioning metrics need pycocoevalcap: pip install pycocoevalcap")
    return Path(list(spec.submodule_search_locations)[0])


def pycocoevalcap_version() -> str:
    return md.version("pycocoevalcap")


def java_problem() -> str | None:
    """Why the Java-based parts (PTB tokenizer, METEOR) cannot run, or None."""
    if importlib.util.find_spec("pycocoevalcap") is None:
        return "COCO captioning metrics need pycocoevalcap: pip install pycocoevalcap"
    if shutil.which("java") is None:
        return ("COCO captioning metrics need Java (pycocoevalcap's PTB tokenizer and METEOR "
                "run on it): install a JRE, e.g. apt-get install default-jre-headless")
    return None


def corenlp_dir(extra: Path | None) -> Path | None:
    """A folder holding both Stanford CoreNLP 3.6.0 jars SPICE needs, or None."""
    candidates = ([extra] if extra else []) + [package_dir() / "spice" / "lib"]
    for folder in candidates:
        if all((folder / jar).is_file() for jar in CORENLP_JARS):
            return folder
    return None


def _link_or_copy(source: Path, target: Path) -> None:
    if target.is_symlink() and target.resolve() != source.resolve():
        target.unlink()  # the jars moved (another corenlp_dir): link the current ones
    if target.exists():
        return
    try:
        target.symlink_to(source)
    except OSError:
        shutil.copy2(source, target)


def _relocated(cache: Path, subpackage: str, jar_folders: Mapping[str, Path]) -> Path:
    """A writable copy of `pycocoevalcap/<subpackage>`: its .py files copied, jars linked.

    jar_folders maps a folder inside the copy ("" for the top) to where its jars live.
    """
    target = cache / f"pycocoevalcap-{pycocoevalcap_version()}" / subpackage
    target.mkdir(parents=True, exist_ok=True)
    source = package_dir() / subpackage
    for module in source.glob("*.py"):
        if not (target / module.name).exists():
            shutil.copy2(module, target / module.name)
    for inner, folder in jar_folders.items():
        (target / inner).mkdir(parents=True, exist_ok=True)
        for jar in folder.glob("*.jar"):
            _link_or_copy(jar, target / inner / jar.name)
    return target


def _load(name: str, folder: Path, module: str) -> ModuleType:
    """Import `folder/module.py` as the private package `name` (so relative imports work)."""
    qualified = f"{name}.{module}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    init = folder / "__init__.py"
    if not init.exists():
        init.write_text("")
    _exec(importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(folder)]))
    return _exec(importlib.util.spec_from_file_location(qualified, folder / f"{module}.py"))


def _exec(spec: importlib.machinery.ModuleSpec | None) -> ModuleType:
    assert spec is not None and spec.loader is not None, "a file location always has a spec"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def ptb_tokenizer_class(cache: Path) -> type:
    """pycocoevalcap's PTBTokenizer, running from a writable copy of its folder."""
    source = package_dir() / "tokenizer"
    folder = _relocated(cache, "tokenizer", {"": source})
    return _load("_harness_pycocoevalcap_tokenizer", folder, "ptbtokenizer").PTBTokenizer


def _spice(cache: Path, jars: Path) -> object:
    source = package_dir() / "spice"
    folder = _relocated(cache, "spice", {"": source, "lib": source / "lib"})
    for jar in CORENLP_JARS:
        _link_or_copy(jars / jar, folder / "lib" / jar)
    return _load("_harness_pycocoevalcap_spice", folder, "spice").Spice()


@functools.lru_cache(maxsize=1)
def shared_meteor() -> Any:
    """One METEOR Java process per Python process: loading its paraphrase table takes
    seconds, and each `compute_score` call is independent (SCORE lines, then one EVAL)."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


class CaptionScores(NamedTuple):
    scores: dict[str, float | None]
    notes: dict[str, str]
    # Each image's CIDEr under the IDF of the whole scored set: the corpus CIDEr is their
    # mean, and paired bootstrap tests resample them.
    cider_per_image: dict[int, float]


def caption_scores(references: Mapping[int, list[str]], predictions: Mapping[int, str],
                   cache: Path, corenlp: Path | None = None) -> CaptionScores:
    """(scores, notes, cider_per_image): BLEU-1..4, METEOR, ROUGE-L, CIDEr, and SPICE when
    CoreNLP is available, else None with the reason in notes.

    references and predictions are keyed by image id; both sets of captions go through the
    PTB tokenizer in a single Java call.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(references) != set(predictions):
        raise DataError("caption scoring needs exactly one prediction per reference image")
    if not predictions:
        raise DataError("no captions to score")
    problem = java_problem()
    if problem:
        raise DataError(problem)
    captions = {("ref", i): [{"caption": c} for c in refs] for i, refs in references.items()}
    captions |= {("pred", i): [{"caption": p}] for i, p in predictions.items()}
    tokenized = ptb_tokenizer_class(cache)().tokenize(captions)
    gts = {i: tokenized[("ref", i)] for i in references}
    res = {i: tokenized[("pred", i)] for i in references}

    scores: dict[str, float | None] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints BLEU's internals
        bleu, _ = Bleu(4).compute_score(gts, res)
    scores.update(zip(BLEU_KEYS, map(float, bleu)))
    scores["METEOR"] = float(shared_meteor().compute_score(gts, res)[0])
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    cider, per_image = Cider().compute_score(gts, res)
    scores["CIDEr"] = float(cider)
    scores["SPICE"], problem = _spice_score(gts, res, cache, corenlp_dir(corenlp))
    notes = {"SPICE": f"unavailable: {problem}"} if problem else {}
    if problem:
        log.warning("SPICE %s", notes["SPICE"])
    # pycocoevalcap's Cider lists per-image scores in its gts's key order
    return CaptionScores(scores, notes, {i: float(s) for i, s in zip(gts, per_image)})


def _spice_score(gts: dict, res: dict, cache: Path,
                 jars: Path | None) -> tuple[float | None, str | None]:
    if jars is None:
        return None, (f"Stanford CoreNLP 3.6.0 jars ({', '.join(CORENLP_JARS)}) not found; "
                      f"put them in a folder and pass -O corenlp_dir=<folder>")
    try:
        spice: Any = _spice(cache, jars)
        return float(spice.compute_score(gts, res)[0]), None
    except Exception as exc:  # SPICE's Java side breaks on some JDKs; other metrics stand
        return None, f"SPICE failed ({type(exc).__name__}: {exc})"


def cache_dir() -> Path:
    return cache_root() / "pycocoevalcap"


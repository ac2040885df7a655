"""`flores`: FLORES-200 machine translation, scored with sacrebleu's chrF++, BLEU and spBLEU.

lm-eval 0.4.13 has no usable FLORES-200 task (its `flores_*` subsets read the script
dataset `facebook/flores`, which `datasets` >= 4 cannot load), so this plugin builds its
own lm-eval configs: one generation subtask per direction, `flores_<src>-<tgt>`, over the
original `devtest` files (one `<lang>.devtest` per language, aligned line by line), with
few-shot examples from the `dev` split when `num_fewshot` > 0.

The task is the group of its directions: `score` computes each direction's corpus metrics
over the merged predictions and reports their mean over directions (the NLLB convention)
plus every direction on its own. chrF++ leads. spBLEU (sacrebleu's `flores200`
SentencePiece tokenizer) needs the `sentencepiece` package and the tokenizer model in
`$SACREBLEU/models`; without them it is reported as unavailable, never as 0. Every score
is stored with its sacrebleu signature.

Default languages: ten low-resource languages of the shared FLORES-200 copy, into and out
of English (CALM, Bansal et al. 2024, evaluates low-resource XX->En on FLORES-200). Any
language pair can be asked for with `directions`.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from harness.api import (Capability, CorpusMetric, DataError, HarnessError, LmEvalPlan, Metric,
                         MetricValues, Samples, ScoreDetails, TaskContext, TaskSpec, UsageError,
                         at_least, dataset_dict, first_existing, first_response, hookimpl, option)

FIXTURES = Path(__file__).parent / "fixtures"
# Low-resource languages present in the shared 30-language FLORES-200 copy: East, West and
# Southern Africa (Latin and Ge'ez scripts), South and South-East Asia, the Andes.
DEFAULT_LANGUAGES = ("swh_Latn", "yor_Latn", "hau_Latn", "amh_Ethi", "zul_Latn", "som_Latn",
                     "npi_Deva", "khm_Khmr", "mya_Mymr", "quy_Latn")
LANGUAGE_NAMES = {
    "eng_Latn": "English", "swh_Latn": "Swahili", "yor_Latn": "Yoruba", "hau_Latn": "Hausa",
    "ibo_Latn": "Igbo", "amh_Ethi": "Amharic", "zul_Latn": "Zulu", "xho_Latn": "Xhosa",
    "som_Latn": "Somali", "kin_Latn": "Kinyarwanda", "lin_Latn": "Lingala", "wol_Latn": "Wolof",
    "tir_Ethi": "Tigrinya", "lug_Latn": "Ganda", "npi_Deva": "Nepali", "sin_Sinh": "Sinhala",
    "khm_Khmr": "Khmer", "lao_Laoo": "Lao", "mya_Mymr": "Burmese", "pbt_Arab": "Pashto",
    "tgk_Cyrl": "Tajik", "quy_Latn": "Quechua", "zho_Hans": "Chinese (Simplified)",
    "hin_Deva": "Hindi", "arb_Arab": "Arabic", "fra_Latn": "French", "deu_Latn": "German",
    "spa_Latn": "Spanish", "rus_Cyrl": "Russian", "jpn_Jpan": "Japanese",
}
LANGUAGE_CODE = re.compile(r"[a-z]{3}_[A-Z][a-z]{3}")
HF_UNAVAILABLE = ("FLORES-200 has no loadable Hugging Face copy (facebook/flores is a loading "
                  "script that datasets>=4 cannot run; openlanguagedata/flores_plus is gated): "
                  "use --data local with <data-dir>/flores200/devtest/<lang>.devtest")
SUBTASK_PREFIX = "flores_"


@dataclass(frozen=True)
class FloresOptions:
    languages: tuple[str, ...] = option(
        (), 'languages paired with `pivot`; empty: the default low-resource set present in the data')
    pivot: str = option("eng_Latn", 'the language every other one is translated into and from')
    direction: Literal["both", "into_pivot", "from_pivot"] = option(
        "both", 'both directions, or only into / from the pivot')
    directions: tuple[str, ...] = option(
        (), 'explicit "src-tgt" pairs (e.g. swh_Latn-eng_Latn); replaces languages x pivot')
    num_fewshot: int = option(0, 'examples from the dev split (must exist for both languages)')
    max_gen_toks: int = option(256, 'token budget per translation')

    def __post_init__(self) -> None:
        at_least(self, num_fewshot=0, max_gen_toks=1)


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


def read_lines(path: Path) -> list[str]:
    """The sentences of a FLORES text file: one per line, UTF-8, no blank lines."""
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise DataError(f"{path}:{number}: blank line "
                            "(FLORES files hold one sentence per line)")
    if not lines:
        raise DataError(f"{path}: no sentences")
    return lines


def aligned_pairs(source: Path, target: Path) -> list[dict[str, Any]]:
    sources, targets = read_lines(source), read_lines(target)
    if len(sources) != len(targets):
        raise DataError(f"{source} has {len(sources)} lines but {target} has {len(targets)}; "
                        "FLORES files must be aligned line by line")
    return [{"id": i, "source": s, "target": t} for i, (s, t) in enumerate(zip(sources, targets))]


def load_direction(root: Path, source: str, target: str, with_dev: bool, **_: Any) -> Any:
    """One direction as a DatasetDict: `devtest` (evaluated) and, for few-shot, `dev`."""
    splits = {"devtest": aligned_pairs(root / "devtest" / f"{source}.devtest",
                                       root / "devtest" / f"{target}.devtest")}
    if with_dev:
        splits["dev"] = aligned_pairs(root / "dev" / f"{source}.dev",
                                      root / "dev" / f"{target}.dev")
    return dataset_dict(splits)


def local_root(base: Path) -> Path:
    devtest = first_existing([base / "flores200" / "devtest",
                              base / "flores200_dataset" / "devtest", base / "devtest"],
                             "FLORES-200 devtest folder")
    return devtest.parent.resolve()


def available_languages(root: Path) -> list[str]:
    return sorted(p.name.removesuffix(".devtest") for p in (root / "devtest").glob("*.devtest"))


def _check_code(code: str) -> str:
    if not LANGUAGE_CODE.fullmatch(code):
        raise UsageError(f"flores: {code!r} is not a FLORES-200 language code like swh_Latn")
    return code


def directions(options: FloresOptions, available: list[str]) -> list[tuple[str, str]]:
    """The (source, target) pairs to evaluate, checked against the languages in the data."""
    if options.directions:
        pairs = []
        for text in options.directions:
            source, sep, target = text.partition("-")
            if not sep or source == target:
                raise UsageError(f"flores: direction {text!r} must read SRC-TGT, "
                                 "e.g. swh_Latn-eng_Latn")
            pairs.append((_check_code(source), _check_code(target)))
    else:
        pivot = _check_code(options.pivot)
        if options.languages:
            languages = [_check_code(code) for code in options.languages]
        else:
            languages = [code for code in DEFAULT_LANGUAGES if code in available]
            if not languages:
                raise DataError(f"none of the default FLORES languages "
                                f"({', '.join(DEFAULT_LANGUAGES)}) is in the data; "
                                "name some with the `languages` option")
        languages = [code for code in languages if code != pivot]
        pairs = [pair for code in languages for pair in
                 {"both": [(code, pivot), (pivot, code)], "into_pivot": [(code, pivot)],
                  "from_pivot": [(pivot, code)]}[options.direction]]
    missing = sorted({code for pair in pairs for code in pair} - set(available))
    if missing:
        raise DataError(f"no devtest file for {', '.join(missing)} (found: {', '.join(available)})")
    return list(dict.fromkeys(pairs))


def subtask_config(root: Path, source: str, target: str, options: FloresOptions) -> dict[str, Any]:
    source_name, target_name = language_name(source), language_name(target)
    with_dev = options.num_fewshot > 0
    config: dict[str, Any] = {
        "task": f"{SUBTASK_PREFIX}{source}-{target}",
        "custom_dataset": partial(load_direction, root, source, target, with_dev),
        "test_split": "devtest",
        "output_type": "generate_until",
        "description": f"Translate the following sentence from {source_name} to {target_name}.\n\n",
        "doc_to_text": f"{source_name}: {{{{source}}}}\n{target_name}:",
        "doc_to_target": "target",
        "target_delimiter": " ",
        "fewshot_delimiter": "\n\n",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": options.max_gen_toks,
                              "do_sample": False},
        # lm-eval's own corpus chrF++ per direction, kept in its results as a cross-check.
        "metric_list": [{"metric": "chrf++", "aggregation": "chrf++", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    if with_dev:
        config |= {"fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"}}
    return config


def lm_eval_plan(ctx: TaskContext) -> LmEvalPlan:
    options: FloresOptions = ctx.options
    if options.num_fewshot < 0 or options.max_gen_toks < 1:
        raise UsageError("flores: num_fewshot must be >= 0 and max_gen_toks >= 1")
    if ctx.data.kind == "hf":
        raise DataError(HF_UNAVAILABLE)
    root = FIXTURES / "flores200" if ctx.data.kind == "embedded" else local_root(ctx.data.folder)
    pairs = directions(options, available_languages(root))
    files = sorted({root / "devtest" / f"{code}.devtest" for pair in pairs for code in pair})
    if options.num_fewshot > 0:
        dev = sorted({root / "dev" / f"{code}.dev" for pair in pairs for code in pair})
        missing = [p.name for p in dev if not p.is_file()]
        if missing:
            raise DataError(f"{options.num_fewshot}-shot prompts take their examples from the dev "
                            f"split, but {root / 'dev'} lacks {', '.join(missing)}; use "
                            "num_fewshot=0 or directions whose languages have dev files")
        files += dev
    return LmEvalPlan(tasks=[subtask_config(root, s, t, options) for s, t in pairs],
                      num_fewshot=options.num_fewshot, data_files=files, uses_stock_tasks=False)


def spbleu_unavailable() -> str | None:
    """Why spBLEU (flores200 SentencePiece) cannot be computed here, or None if it can."""
    if importlib.util.find_spec("sentencepiece") is None:
        return "needs the sentencepiece package (pip install sentencepiece)"
    from sacrebleu.tokenizers import tokenizer_spm

    url = tokenizer_spm.SPM_MODELS["flores200"]["url"]
    model = Path(tokenizer_spm.SACREBLEU_DIR) / "models" / Path(url).name
    if not model.is_file():
        return (f"needs the FLORES-200 SentencePiece model at {model} (fetch {url} there once, "
                "or point $SACREBLEU at a folder holding models/)")
    return None


def score(samples: Samples, ctx: TaskContext) -> MetricValues:
    from sacrebleu.metrics import BLEU, CHRF

    scorers = {"chrf++": CHRF(word_order=2), "bleu": BLEU()}
    unavailable = {}
    problem = spbleu_unavailable()
    if problem:
        unavailable["spbleu"] = problem
    else:
        scorers["spbleu"] = BLEU(tokenize="flores200")
    by_direction: dict[str, list[dict[str, Any]]] = {}
    for sample in samples:
        by_direction.setdefault(sample["task"].removeprefix(SUBTASK_PREFIX), []).append(sample)
    if not by_direction:
        raise HarnessError("flores: no translations to score")
    metrics: dict[str, tuple[float, float | None]] = {}
    per_direction: dict[str, dict[str, Any]] = {}
    for direction, group in sorted(by_direction.items()):
        group.sort(key=lambda s: s["doc_id"])
        hypotheses = [first_response(s) for s in group]
        references = [[s["doc"]["target"] for s in group]]
        per_direction[direction] = {"sentences": len(group)}
        for key, scorer in scorers.items():
            value = scorer.corpus_score(hypotheses, references).score
            metrics[f"{key}/{direction}"] = (value, None)
            per_direction[direction][key] = value
    for key in scorers:
        values = [per_direction[d][key] for d in per_direction]
        metrics[key] = (sum(values) / len(values), None)
    ctx.score_details.facts.update(
        signatures={key: scorer.get_signature().format() for key, scorer in scorers.items()},
        unavailable=unavailable,
        aggregation="mean over directions of corpus-level scores",
        directions=per_direction)
    return metrics


@functools.lru_cache(maxsize=None)
def _sacrebleu_metric(key: str) -> Any:
    from sacrebleu.metrics import BLEU, CHRF

    return {"chrf++": CHRF(word_order=2), "bleu": BLEU()}[key]


def sentence_statistics(key: str, samples: Samples, _details: ScoreDetails) -> dict[tuple[str, Any], Any]:
    """Each translation's sacrebleu sufficient statistics (character / word n-gram matches
    and totals) after its direction's number: summed per direction they give that
    direction's corpus score exactly (sacrebleu's own paired bootstrap sums them too)."""
    metric = _sacrebleu_metric(key)
    stats = metric._extract_corpus_statistics([first_response(s) for s in samples],
                                              [[s["doc"]["target"] for s in samples]])
    directions = {name: code for code, name in enumerate(sorted({s["task"] for s in samples}))}
    return {(s["task"], s["doc_id"]): [directions[s["task"]], *row]
            for s, row in zip(samples, stats)}


def corpus_from_totals(key: str, totals: Any) -> float:
    """`score`'s aggregate from each direction's summed sentence statistics: the mean over
    directions of their corpus scores."""
    metric = _sacrebleu_metric(key)
    scores = [metric._compute_score_from_stats([int(count) for count in row]).score
              for row in totals]
    return sum(scores) / len(scores)


CORPUS_METRICS = tuple(CorpusMetric(key, partial(sentence_statistics, key),
                                    partial(corpus_from_totals, key), summed=True)
                       for key in ("chrf++", "bleu"))


@hookimpl
def harness_tasks() -> list[TaskSpec]:
    return [TaskSpec(
        name="flores",
        description="FLORES-200 devtest translation, low-resource languages <-> English; "
                    "corpus chrF++ (sacrebleu), mean over directions.",
        headline=Metric("chrf++", "chrF++"),
        metrics=(Metric("bleu", "BLEU"), Metric("spbleu", "spBLEU (flores200)")),
        lm_eval=lm_eval_plan,
        requires=frozenset({Capability.GENERATION}),
        local_format="original text files: flores200/devtest/<lang>.devtest "
                     "(+ flores200/dev/<lang>.dev for few-shot)",
        embedded_data=FIXTURES,
        options=FloresOptions,
        score=score,
        corpus_metrics=CORPUS_METRICS,
    )]

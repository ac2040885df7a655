"""`vicuna_bench`: the 80 Vicuna-bench questions, answered by the method, graded by an LLM judge.

Protocol of FastChat's llm_judge: answers are generated through lm-eval (generate_until,
predict-only, greedy); a judge then grades each answer from 1 to 10 (`[[rating]]`; maths
and coding questions with their reference answer) and, when a baseline is given, compares
each answer with the baseline's in both orders (`[[A]]`/`[[B]]`/`[[C]]`), a win counting
only when both orders agree and anything inconsistent counting as a tie. Reported: mean
score (headline), unrated answers, and against a baseline win/tie/loss, win rate,
adjusted win rate (ties half), pairwise parse failures and the position-flip rate.

Data: FastChat's files under `<data-dir>/vicuna_bench/`: question.jsonl,
reference_answer/gpt-4.jsonl and, when present, judge_prompts.jsonl (FastChat's own
prompts, used as they are); otherwise the judge prompts shipped here, written for this
harness in FastChat's schema. A rating is, by default, the expected rating under the
judge's probability of each rating 1-10 at its rating position (G-Eval; `judge_rating`,
harness.judge), so even a tiny zoo judge yields a number; FastChat's parsed `[[rating]]`
is the fallback and, with `judge_rating=text`, the only reading. The judge is a local
transformers model by default (offline) or any OpenAI-compatible endpoint: `-O judge_backend=openai -O judge_model=gpt-4-0613
[-O judge_base_url=...]`, key from $OPENAI_API_KEY (or the variable `judge_api_key_env`
names). Judgments are cached on disk by content under `$HARNESS_CACHE/judgments/`.

Baseline (pairwise) answers, option `baseline`: a JSONL answer file (FastChat
`model_answer` format, FastChat's legacy `{"question_id", "text"}` format, or a harness
samples.jsonl), a finished cell's folder, or `cell:<row label or row key>`: the most
recent finished vicuna_bench cell of that leaderboard row (e.g. `cell:single (tiny-llama)`)
in this run's results store, on the same data. Run the baseline row first.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from harness.api import (Capability, CorpusMetric, DataError, HarnessError, LmEvalPlan, Metric,
                         MetricValues, Samples, ScoreDetails, TaskContext, TaskSpec, at_least,
                         dataset_dict, first_existing, first_response, hookimpl, mean_and_stderr,
                         option, read_jsonl_rows)

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
OUR_JUDGE_PROMPTS = HERE / "judge_prompts.jsonl"
# FastChat's NEED_REF_CATS restricted to the categories Vicuna-bench has.
REFERENCE_CATEGORIES = frozenset({"math", "coding"})
PROMPT = "USER: {question}\nASSISTANT:"
RATINGS = (1, 10)  # FastChat's single-grading scale


@dataclass(frozen=True)
class VicunaBenchOptions:
    max_gen_toks: int = option(1024, 'token budget per answer')
    apply_chat_template: bool = option(
        False, "format questions with the model's chat template instead of the plain prompt")
    judge_backend: Literal["local", "openai"] = option(
        "local", 'local: a model loaded here; openai: an OpenAI-compatible endpoint')
    judge_model: str = option(
        "harness-zoo/tiny-llama", "the judge: a model reference (local) or the endpoint's model name")
    judge_base_url: str = option("", "openai backend; empty: $OPENAI_BASE_URL or OpenAI's")
    judge_api_key_env: str = option(
        "OPENAI_API_KEY", 'name of the variable holding the key (the key is never stored)')
    judge_temperature: float = option(0.0, 'sampling temperature of the judge')
    judge_max_tokens: int = option(2048, 'token budget of each judgment')
    judge_timeout_s: float = option(120.0, 'seconds before a judge request is abandoned')
    judge_retries: int = option(6, 'retries of a failed judge request')
    judge_backoff_s: float = option(2.0, 'first wait between retries (doubles each time)')
    judge_parallel: int = option(4, 'judge requests in flight at once')
    judge_rating: Literal["probabilities", "text"] = option(
        "probabilities", "probabilities: the expected rating from the judge's probability of "
        "each rating 1-10 (G-Eval), the [[rating]] text where none are available; text: "
        "FastChat's parsed [[rating]] only")
    judge_prompts: str = option(
        "", "FastChat judge_prompts.jsonl; empty: the data's own, else ours")
    baseline: str = option(
        "", 'pairwise baseline answers: a file, a cell folder or cell:<row>; empty: single grading')

    def __post_init__(self) -> None:
        at_least(self, max_gen_toks=1, judge_max_tokens=1, judge_timeout_s=0.001, judge_retries=0, judge_parallel=1)


@dataclass(frozen=True)
class Files:
    questions: Path
    references: Path | None
    judge_prompts: Path


def data_files(ctx: TaskContext) -> Files:
    options: VicunaBenchOptions = ctx.options
    if ctx.data.kind == "embedded":
        folder = FIXTURES
        references = folder / "reference_answer" / "fixture.jsonl"
    elif ctx.data.kind == "hf":
        raise DataError("vicuna_bench reads FastChat's files: pass --data-dir with "
                        "vicuna_bench/question.jsonl")
    else:
        base = ctx.data.folder
        folder = first_existing([base / "vicuna_bench", base], "Vicuna-bench folder").resolve()
        first_existing([folder / "question.jsonl"], "Vicuna-bench question.jsonl")
        references = folder / "reference_answer" / "gpt-4.jsonl"
    prompts = (Path(options.judge_prompts).expanduser() if options.judge_prompts
               else folder / "judge_prompts.jsonl")
    if not options.judge_prompts and not prompts.is_file():
        prompts = OUR_JUDGE_PROMPTS
    return Files(folder / "question.jsonl", references if references.is_file() else None, prompts)


def read_questions(path: Path) -> list[dict[str, Any]]:
    rows = read_jsonl_rows(path, ("question_id", "category", "turns"))
    for number, row in enumerate(rows, 1):
        if not isinstance(row["turns"], list) or not row["turns"] or not all(
                isinstance(t, str) for t in row["turns"]):
            raise DataError(f"{path}:{number}: 'turns' must be a non-empty list of strings")
    return [{"question_id": r["question_id"], "category": r["category"], "question": r["turns"][0]}
            for r in rows]


def read_answers(path: Path) -> dict[Any, str]:
    """question_id -> first-turn answer, from FastChat's model_answer/reference format
    (`choices[0].turns[0]`), its legacy `text` format, or a harness samples.jsonl."""
    answers = {}
    for number, row in enumerate(read_jsonl_rows(path), 1):
        if "choices" in row and "question_id" in row:
            try:
                answers[row["question_id"]] = row["choices"][0]["turns"][0]
            except (IndexError, KeyError, TypeError):
                raise DataError(f"{path}:{number}: 'choices' lacks choices[0].turns[0]") from None
        elif "text" in row and "question_id" in row:
            answers[row["question_id"]] = row["text"]
        elif isinstance(row.get("doc"), dict) and "question_id" in row["doc"]:
            answers[row["doc"]["question_id"]] = first_response(row)
        else:
            raise DataError(f"{path}:{number}: not an answer record (need question_id with "
                            "choices, text, or a harness sample with doc.question_id)")
    return answers


def load_documents(questions: Path, **_: Any) -> Any:
    return dataset_dict({"test": read_questions(questions)})


def lm_eval_plan(ctx: TaskContext) -> LmEvalPlan:
    options: VicunaBenchOptions = ctx.options
    files = data_files(ctx)
    read_judge_prompts_checked(files.judge_prompts)
    config = {
        "task": "vicuna_bench",
        "custom_dataset": partial(load_documents, files.questions),
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{question}}" if options.apply_chat_template else PROMPT.replace(
            "{question}", "{{question}}"),
        "doc_to_target": "",
        "generation_kwargs": {"until": [] if options.apply_chat_template else ["\nUSER:"],
                              "max_gen_toks": options.max_gen_toks, "do_sample": False,
                              "temperature": 0.0},
        "metric_list": [{"metric": "bypass", "aggregation": "bypass", "higher_is_better": True}],
        "metadata": {"version": 1},
    }
    tracked = [files.questions, files.judge_prompts] + ([files.references] if files.references else [])
    baseline_file = _baseline_path(options.baseline)
    if baseline_file is not None:
        tracked.append(baseline_file)
    return LmEvalPlan(tasks=[config], num_fewshot=0, data_files=tracked, uses_stock_tasks=False,
                      apply_chat_template=options.apply_chat_template)


def read_judge_prompts_checked(path: Path) -> dict[str, Any]:
    from harness.judge import read_judge_prompts

    prompts = read_judge_prompts(path)
    missing = [n for n in ("single-v1", "single-math-v1", "pair-v2", "pair-math-v1") if n not in prompts]
    if missing:
        raise DataError(f"{path}: judge prompt(s) {', '.join(missing)} missing")
    return prompts


def _baseline_path(baseline: str) -> Path | None:
    """The file behind a path-valued baseline option (None for "" and `cell:` labels)."""
    if not baseline or baseline.startswith("cell:"):
        return None
    path = Path(baseline).expanduser()
    if path.is_dir():
        path = path / "samples.jsonl"
    if not path.is_file():
        raise DataError(f"vicuna_bench baseline {baseline!r}: no such answer file or cell folder")
    return path


def baseline_answers(ctx: TaskContext) -> tuple[dict[Any, str], str] | None:
    """(question_id -> answer, where they came from), or None without a baseline."""
    options: VicunaBenchOptions = ctx.options
    if not options.baseline:
        return None
    if not options.baseline.startswith("cell:"):
        path = _baseline_path(options.baseline)
        assert path is not None  # a non-empty baseline that is not a cell label
        return read_answers(path), str(path)
    row = options.baseline.removeprefix("cell:").strip()
    if ctx.store is None:
        raise DataError("vicuna_bench baseline 'cell:...' needs a results store")
    found = ctx.store.find(task="vicuna_bench", row=row, data=ctx.data.describe())
    if not found:
        raise DataError(f"no finished vicuna_bench cell of row {row!r} on data "
                        f"{ctx.data.describe()} in {ctx.store.root}; run that row first or "
                        f"pass baseline=<answers.jsonl>")
    keys = {record.row.key for record in found}
    if len(keys) > 1:
        raise DataError(f"vicuna_bench baseline {row!r} names {len(keys)} different rows "
                        f"(keys {', '.join(sorted(keys))}); use cell:<row key>")
    folder = ctx.store.cell_dir(found[0].row.method, "vicuna_bench", found[0].fingerprint)
    return read_answers(folder / "samples.jsonl"), str(folder)


def score(samples: Samples, ctx: TaskContext) -> MetricValues:
    """Judge every answer; annotate each sample with its judgments; return the metrics."""
    from harness.judge import (JudgeRequest, JudgeSettings, JudgmentCache, parse_preference,
                               parse_rating, run_judgments)

    options: VicunaBenchOptions = ctx.options
    files = data_files(ctx)
    prompts = read_judge_prompts_checked(files.judge_prompts)
    references = read_answers(files.references) if files.references else {}
    baseline = baseline_answers(ctx)
    settings = JudgeSettings(
        backend=options.judge_backend, model=options.judge_model, base_url=options.judge_base_url,
        api_key_env=options.judge_api_key_env, temperature=options.judge_temperature,
        max_tokens=options.judge_max_tokens, timeout_s=options.judge_timeout_s,
        retries=options.judge_retries, backoff_s=options.judge_backoff_s,
        parallel=options.judge_parallel, rating=options.judge_rating)

    requests, slots = [], []  # slots[i] = (sample, kind) for requests[i]
    for sample in samples:
        doc = sample["doc"]
        qid, question, answer = doc["question_id"], doc["question"], first_response(sample)
        needs_reference = doc["category"] in REFERENCE_CATEGORIES
        if needs_reference and qid not in references:
            raise DataError(f"no reference answer for {doc['category']} question {qid} "
                            f"(reference_answer file: {files.references})")
        reference = {"ref_answer_1": references[qid]} if needs_reference else {}
        single = prompts["single-math-v1" if needs_reference else "single-v1"]
        requests.append(JudgeRequest(f"question {qid} single", single.name,
                                     single.messages(question=question, answer=answer, **reference),
                                     scale=RATINGS))
        slots.append((sample, "single"))
        if baseline is not None:
            if qid not in baseline[0]:
                raise DataError(f"baseline {baseline[1]} has no answer for question {qid}")
            pair = prompts["pair-math-v1" if needs_reference else "pair-v2"]
            other = baseline[0][qid]
            for order, (a, b) in (("AB", (answer, other)), ("BA", (other, answer))):
                requests.append(JudgeRequest(f"question {qid} pairwise {order}", pair.name,
                                             pair.messages(question=question, answer_a=a,
                                                           answer_b=b, **reference)))
                slots.append((sample, order))

    outcomes = run_judgments(settings, JudgmentCache.default(), requests, ctx.device)
    failed = [o for o in outcomes if o.error]
    if failed:
        raise HarnessError(f"judge failed on {len(failed)} of {len(outcomes)} judgments "
                           f"({'; '.join(f'{o.request.label}: {o.error}' for o in failed[:3])}); "
                           f"rerun to retry them, finished judgments are cached")

    ratings: list[float] = []
    methods: Counter[str] = Counter()
    verdicts: dict[int, dict[str, str | None]] = {}  # doc_id -> order -> winner
    for (sample, kind), outcome in zip(slots, outcomes):
        judgment = sample.setdefault("judgment", {})
        entry: dict[str, Any] = {"prompt": outcome.request.prompt, "text": outcome.text,
                                 "cache_key": outcome.key}
        if kind == "single":
            entry.update(read_rating(outcome.probabilities, parse_rating(outcome.text or "")))
            methods[entry["rating_method"]] += 1
            if entry["rating"] is not None:
                ratings.append(entry["rating"])
        else:
            raw = parse_preference(outcome.text or "")
            # back to the method's point of view: in order BA the method is assistant B
            mine, theirs = ("A", "B") if kind == "AB" else ("B", "A")
            entry["winner"] = {mine: "method", theirs: "baseline", "tie": "tie", None: None}[raw]
            verdicts.setdefault(sample["doc_id"], {})[kind] = entry["winner"]
        judgment[kind] = entry

    metrics: dict[str, tuple[float, float | None]] = {
        "score": mean_and_stderr(ratings),
        "score_parse_failures": (float(len(samples) - len(ratings)), None),
    }
    if baseline is not None:
        metrics.update(pairwise_metrics(list(verdicts.values())))
    if not ratings:
        ctx.score_details.headline_unavailable = (
            f"the judge gave no parsable [[rating]] ({len(samples)} of {len(samples)} unparsed)")
    ctx.score_details.facts.update({
        "judge": settings.identity(), "judge_prompts": str(files.judge_prompts),
        "baseline": baseline[1] if baseline else None,
        "judgments": {"total": len(outcomes), "cached": sum(o.cached for o in outcomes)},
        "rating_methods": dict(sorted(methods.items()))})
    return metrics


def read_rating(probabilities: dict[int, float] | None, text_rating: float | None
                ) -> dict[str, Any]:
    """A single judgment's rating and how it was read: the expected rating under the
    judge's probabilities, else the `[[rating]]` of its text, else none ("failed"). The
    text's rating is kept beside the expected one."""
    from harness.judge import expected_rating

    if probabilities:
        return {"rating": expected_rating(probabilities), "rating_method": "probabilities",
                "rating_probabilities": {str(k): v for k, v in probabilities.items()},
                "text_rating": text_rating}
    return {"rating": text_rating, "rating_method": "text" if text_rating is not None else "failed"}


def pairwise_metrics(verdicts: list[dict[str, str | None]]) -> dict[str, tuple[float, None]]:
    """FastChat's two-order rule: a win or loss needs both orders to agree; a tie or an
    inconsistent pair is a tie; a pair with an unparseable verdict is left out."""
    parsed = [v for v in verdicts if v.get("AB") is not None and v.get("BA") is not None]
    win = sum(v["AB"] == v["BA"] == "method" for v in parsed)
    loss = sum(v["AB"] == v["BA"] == "baseline" for v in parsed)
    tie = len(parsed) - win - loss
    flips = sum(v["AB"] != v["BA"] for v in parsed)

    def share(count: float) -> float:
        return count / len(parsed) if parsed else math.nan

    return {"win": (float(win), None), "tie": (float(tie), None), "loss": (float(loss), None),
            "win_rate": (share(win), None), "win_rate_adjusted": (share(win + 0.5 * tie), None),
            "pairwise_parse_failures": (float(len(verdicts) - len(parsed)), None),
            "position_flip_rate": (share(flips), None)}


def judge_ratings(samples: Samples, _details: ScoreDetails) -> dict[tuple[str, Any], float]:
    """Each answer's single-answer rating, as `score` stored it in the sample's judgment
    (an unparsed rating is left out, as `score` leaves it out of the mean)."""
    return {(s["task"], s["doc_id"]): float(rating) for s in samples
            if (rating := ((s.get("judgment") or {}).get("single") or {}).get("rating"))
            is not None}


@hookimpl
def harness_tasks() -> list[TaskSpec]:
    return [TaskSpec(
        name="vicuna_bench",
        description="Vicuna-bench, 80 open questions; an LLM judge grades answers 1-10 "
                    "(FastChat protocol), optionally pairwise against a baseline.",
        headline=Metric("score", "judge score (1-10)"),
        metrics=(Metric("win_rate_adjusted", "adjusted win rate vs baseline"),
                 Metric("score_parse_failures", "unparsed ratings", higher_is_better=False)),
        lm_eval=lm_eval_plan,
        requires=frozenset({Capability.GENERATION}),
        local_format="FastChat files: vicuna_bench/question.jsonl, "
                     "reference_answer/gpt-4.jsonl[, judge_prompts.jsonl]",
        embedded_data=FIXTURES,
        options=VicunaBenchOptions,
        score=score,
        corpus_metrics=(CorpusMetric("score", judge_ratings),),
    )]

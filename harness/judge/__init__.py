"""LLM-as-a-judge, the toolkit's face (task plugins import these names and nothing else of
the package): judge settings (an OpenAI-compatible endpoint or a local model), requests
judged once and cached by content (`run_judgments`, `JudgmentCache`), FastChat-format judge
prompts, and verdicts read from a judge's text or its probabilities over the rating scale.
Nothing here imports torch until a local judge runs."""

from harness.judge._backends import JudgeSettings
from harness.judge._judgments import JudgeRequest, JudgmentCache, run_judgments
from harness.judge._verdicts import (expected_rating, parse_preference, parse_rating,
                                     read_judge_prompts)

__all__ = ["JudgeSettings", "JudgeRequest", "JudgmentCache", "run_judgments", "parse_rating",
           "parse_preference", "expected_rating", "read_judge_prompts"]

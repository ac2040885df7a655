"""vicuna_bench and the judge machinery, against a real chat-completions server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

from harness.contract import DataSource, MethodRow, ModelRef, TaskColumn, TaskContext
from harness.host import load_host
from harness.judge._backends import JudgeSettings
from harness.judge._judgments import JudgeRequest, JudgmentCache, run_judgments
from harness.judge._verdicts import (candidate_log_scores, expected_rating, parse_preference,
                                     parse_rating, rating_distribution)
from harness.results.store import Store
from harness.run.jobs import run_plan
from harness.run.plan import plan_cells
from harness.settings import RunSettings
from harness.tasks.vicuna_bench import (VicunaBenchOptions, data_files, pairwise_metrics,
                                        read_answers, read_questions)

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SECRET = "sk-test-never-log-this-0123456789"
KEY_ENV = "HARNESS_TEST_JUDGE_KEY"

Reply = Callable[[dict], tuple[int, bytes] | None]


def chat_reply(content: str, model: str = "judge") -> tuple[int, bytes]:
    return 200, json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": model,
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": content}}]}).encode()


def fastchat_like(body: dict) -> tuple[int, bytes]:
    """Grades 7 and always prefers assistant A: a maximally position-biased judge."""
    text = body["messages"][-1]["content"]
    return chat_reply("Looks fine. [[A]]" if "assistant A" in text else "Decent. Rating: [[7]]",
                      body["model"])


class Server:
    """A chat-completions endpoint on loopback whose answers a test scripts."""

    def __init__(self) -> None:
        self.reply: Reply = fastchat_like
        self.requests: list[dict] = []
        self.authorizations: list[str] = []
        self.current = threading.local()  # the request being answered (its headers)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.authorizations.append(self.headers.get("Authorization", ""))
                server.current.authorization = self.headers.get("Authorization", "")
                answer = server.reply(body)
                if answer is None:  # simulate a hung server: the client times out
                    time.sleep(0.5)
                    answer = chat_reply("too late")
                status, payload = answer
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    endpoint = Server()
    yield endpoint
    endpoint.httpd.shutdown()
    endpoint.httpd.server_close()


@pytest.fixture
def judge_cache(tmp_path, monkeypatch):
    """A harness cache whose judgments start empty; the test cache's other entries (the zoo
    models) are linked into it rather than built again."""
    shared, cache = Path(os.environ["HARNESS_CACHE"]), tmp_path / "cache"
    cache.mkdir()
    (shared / "zoo").mkdir(parents=True, exist_ok=True)  # built once, where every test finds it
    for entry in shared.iterdir():
        if entry.name != "judgments":
            (cache / entry.name).symlink_to(entry)
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    return cache / "judgments"


def settings(url: str, **overrides) -> JudgeSettings:
    return JudgeSettings(**{"backend": "openai", "model": "judge-x", "base_url": url,
                            "api_key_env": KEY_ENV, "timeout_s": 0.2, "retries": 4,
                            "backoff_s": 0.001, "parallel": 2, **overrides})


def requests_for(*labels: str) -> list[JudgeRequest]:
    return [JudgeRequest(label, "single-v1", [{"role": "user", "content": f"grade {label}"}])
            for label in labels]


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, rating", [
    ("Rating: [[7]]", 7.0), ("[[8.5]] then [[2]]", 8.5), ("fallback [6]", 6.0),
    ("no rating here", None), ("Rating: [[11]]", None), ("[[0]]", None)])
def test_parse_rating(text, rating):
    assert parse_rating(text) == rating


@pytest.mark.parametrize("text, verdict", [
    ("[[A]]", "A"), ("so [[B]].", "B"), ("[[C]]", "tie"), ("A is better", None)])
def test_parse_preference(text, verdict):
    assert parse_preference(text) == verdict


def test_two_order_rule():
    verdicts = [{"AB": "method", "BA": "method"},      # win
                {"AB": "baseline", "BA": "baseline"},  # loss
                {"AB": "method", "BA": "baseline"},    # position flip: tie
                {"AB": "tie", "BA": "tie"},            # tie
                {"AB": "method", "BA": "tie"},         # inconsistent: tie
                {"AB": None, "BA": "method"}]          # unparsed: left out
    metrics = {k: v for k, (v, _) in pairwise_metrics(verdicts).items()}
    assert metrics == {"win": 1.0, "tie": 3.0, "loss": 1.0, "win_rate": 0.2,
                       "win_rate_adjusted": 0.5, "pairwise_parse_failures": 1.0,
                       "position_flip_rate": 0.4}


# ----------------------------------------------------------------------------- endpoint


def test_retries_through_429_500_malformed_json_and_timeout(server, tmp_path):
    script = iter([(429, b'{"error": {"message": "slow down"}}'),
                   (500, b'{"error": {"message": "boom"}}'),
                   (200, b"{this is not json"),
                   None])  # a timeout
    server.reply = lambda body: next(script, chat_reply("Rating: [[9]]"))
    [outcome] = run_judgments(settings(server.url), JudgmentCache(tmp_path), requests_for("q1"))
    assert outcome.error is None and outcome.text == "Rating: [[9]]"
    assert len(server.requests) == 5
    assert server.requests[0]["temperature"] == 0.0 and server.requests[0]["model"] == "judge-x"
    assert set(server.authorizations) == {f"Bearer {SECRET}"}


def test_persistent_failure_is_per_question_and_rerun_pays_only_for_it(server, tmp_path, caplog):
    broken = {"q2"}
    server.reply = lambda body: ((500, b'{"error": {"message": "down"}}')
                                 if any(q in body["messages"][-1]["content"] for q in broken)
                                 else chat_reply("Rating: [[5]]"))
    cache = JudgmentCache(tmp_path)
    outcomes = run_judgments(settings(server.url, retries=2), cache, requests_for("q1", "q2", "q3"))
    assert [o.error is None for o in outcomes] == [True, False, True]
    assert "HTTP 500" in outcomes[1].error and "gave up after 3 attempts" in outcomes[1].error
    assert len(server.requests) == 2 + 3
    broken.clear()
    server.requests.clear()
    again = run_judgments(settings(server.url, retries=2), cache, requests_for("q1", "q2", "q3"))
    assert [o.cached for o in again] == [True, False, True]
    assert len(server.requests) == 1 and again[1].text == "Rating: [[5]]"
    assert SECRET not in caplog.text


def test_unauthorised_is_not_retried(server, tmp_path):
    server.reply = lambda body: (401, b'{"error": {"message": "bad key"}}')
    [outcome] = run_judgments(settings(server.url), JudgmentCache(tmp_path), requests_for("q1"))
    assert "HTTP 401" in outcome.error and len(server.requests) == 1


def test_cache_key_covers_judge_and_order():
    judge = settings("http://127.0.0.1:1/v1").identity()
    ab = [{"role": "user", "content": "A: x B: y"}]
    ba = [{"role": "user", "content": "A: y B: x"}]
    assert JudgmentCache.key(judge, ab) != JudgmentCache.key(judge, ba)
    assert JudgmentCache.key(judge, ab) != JudgmentCache.key({**judge, "model": "other"}, ab)
    assert "key" not in json.dumps(judge).lower().replace("api_key", "")


# ----------------------------------------------------------------------------- data


def test_embedded_fixture_and_answer_formats(tmp_path):
    ctx = TaskContext(VicunaBenchOptions(), DataSource("embedded"), tmp_path, None, 0)
    files = data_files(ctx)
    questions = read_questions(files.questions)
    assert {q["category"] for q in questions} >= {"math", "coding"}
    assert set(read_answers(files.references)) == {5, 6}
    legacy = tmp_path / "legacy.jsonl"
    legacy.write_text('{"question_id": 1, "text": "old style"}\n')
    assert read_answers(legacy) == {1: "old style"}


def test_real_vicuna_bench_files_load(tmp_path):
    if not (SHARED_DATA / "vicuna_bench" / "question.jsonl").is_file():
        pytest.skip("shared/data/vicuna_bench absent")
    from harness.tasks.vicuna_bench import lm_eval_plan, read_judge_prompts_checked

    ctx = TaskContext(VicunaBenchOptions(), DataSource("local", SHARED_DATA), tmp_path, None, 0)
    files = data_files(ctx)
    questions = read_questions(files.questions)
    assert len(questions) == 80
    assert sum(q["category"] == "coding" for q in questions) == 7
    assert sum(q["category"] == "math" for q in questions) == 3
    references = read_answers(files.references)
    assert sorted(references) == list(range(61, 71))
    assert all(q["question_id"] in references for q in questions
               if q["category"] in ("math", "coding"))
    assert files.judge_prompts.parent.name == "vicuna_bench"  # FastChat's own prompts
    assert len(read_judge_prompts_checked(files.judge_prompts)) == 8
    plan = lm_eval_plan(ctx)
    assert files.questions in plan.data_files and files.judge_prompts in plan.data_files


# ----------------------------------------------------------------------------- end to end


def _run(host, label: str, model: str, options: VicunaBenchOptions, store: Store, force=False):
    single, task = host.method("single"), host.task("vicuna_bench")
    rows = [MethodRow(single, (ModelRef(model),), single.options(), label)]
    plan = plan_cells(host, rows, [TaskColumn(task, options)],
                      RunSettings(data="embedded", limit=2), store, force=force)
    [outcome] = run_plan(host, plan)
    return outcome


def test_end_to_end_with_endpoint_judge_single_and_pairwise(server, judge_cache, tmp_path, caplog):
    host = load_host(["harness.tasks.vicuna_bench"])
    store = Store(tmp_path / "out")
    common = dict(max_gen_toks=8, judge_backend="openai", judge_model="judge-x",
                  judge_base_url=server.url, judge_api_key_env=KEY_ENV, judge_timeout_s=5.0,
                  judge_backoff_s=0.001)
    base = _run(host, "base", "harness-zoo/tiny-llama", VicunaBenchOptions(**common), store)
    assert base.status == "ok", base.error
    assert base.headline == 7.0

    options = VicunaBenchOptions(**common, baseline="cell:base")
    outcome = _run(host, "challenger", "harness-zoo/tiny-llama-b", options, store)
    assert outcome.status == "ok", outcome.error
    record = json.loads((outcome.path / "result.json").read_text())
    metrics = {k: v["value"] for k, v in record["metrics"].items()}
    # the judge always says [[A]]: every pair flips with the order, so every pair is a tie
    assert metrics == {"score": 7.0, "score_parse_failures": 0.0, "win": 0.0, "tie": 2.0,
                       "loss": 0.0, "win_rate": 0.0, "win_rate_adjusted": 0.5,
                       "pairwise_parse_failures": 0.0, "position_flip_rate": 1.0}
    assert record["score_details"]["judge"]["model"] == "judge-x"
    assert record["score_details"]["judge"]["temperature"] == 0.0
    # the endpoint returns no logprobs: ratings fall back to the text, pairwise never asks
    assert record["score_details"]["rating_methods"] == {"text": 2}
    asked_logprobs = [("logprobs" in body) for body in server.requests]
    assert asked_logprobs.count(True) == 4 and asked_logprobs.count(False) == 4  # 4 pairwise
    assert record["score_details"]["baseline"] == str(base.path)
    samples = [json.loads(line) for line in (outcome.path / "samples.jsonl").open()]
    assert {"single", "AB", "BA"} <= set(samples[0]["judgment"])
    asked = len(server.requests)
    assert asked == 2 + 2 * 3  # base: 2 single; challenger: 2 single + 2 x 2 pairwise

    again = _run(host, "challenger", "harness-zoo/tiny-llama-b", options, store, force=True)
    assert again.status == "ok" and len(server.requests) == asked  # nothing paid twice

    written = [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(SECRET in text for text in written) and SECRET not in caplog.text


def test_judge_outage_fails_the_cell_naming_questions_then_resumes(server, judge_cache, tmp_path):
    host = load_host(["harness.tasks.vicuna_bench"])
    store = Store(tmp_path / "out")
    outage = {"on": True}
    server.reply = lambda body: ((503, b'{"error": {"message": "maintenance"}}')
                                 if outage["on"] and "small garden" in body["messages"][-1]["content"]
                                 else fastchat_like(body))
    options = VicunaBenchOptions(max_gen_toks=8, judge_backend="openai", judge_base_url=server.url,
                                 judge_api_key_env=KEY_ENV, judge_retries=1, judge_backoff_s=0.001)
    failed = _run(host, "m", "harness-zoo/tiny-llama", options, store)
    assert failed.status == "failed"
    assert "question 1 single" in failed.error and "HTTP 503" in failed.error
    outage["on"] = False
    server.requests.clear()
    resumed = _run(host, "m", "harness-zoo/tiny-llama", options, store)
    assert resumed.status == "ok" and resumed.headline == 7.0
    assert len(server.requests) == 1  # question 2's judgment was kept from the failed run


def test_local_zoo_judge_always_answers_by_rating_probabilities(judge_cache, tmp_path):
    host = load_host(["harness.tasks.vicuna_bench"])
    options = VicunaBenchOptions(max_gen_toks=8, judge_max_tokens=8)
    outcome = _run(host, "m", "harness-zoo/tiny-llama", options, Store(tmp_path / "out"))
    assert outcome.status == "ok", outcome.error
    assert 1.0 <= outcome.headline <= 10.0
    record = json.loads((outcome.path / "result.json").read_text())
    assert record["score_details"]["rating_methods"] == {"probabilities": 2}
    assert record["metrics"]["score_parse_failures"]["value"] == 0.0
    for sample in (json.loads(line) for line in (outcome.path / "samples.jsonl").open()):
        single = sample["judgment"]["single"]
        probabilities = {int(k): v for k, v in single["rating_probabilities"].items()}
        assert sorted(probabilities) == list(range(1, 11))
        assert sum(probabilities.values()) == pytest.approx(1.0)
        assert single["rating"] == pytest.approx(sum(r * p for r, p in probabilities.items()))
    # the judge's work is counted in the cell's scoring cost
    [judge] = record["cost"]["scoring"]["models"]
    assert judge["model"] == "harness-zoo/tiny-llama" and judge["forward_passes"] > 0


def test_end_to_end_with_local_zoo_judge_reading_text_only(judge_cache, tmp_path):
    host = load_host(["harness.tasks.vicuna_bench"])
    options = VicunaBenchOptions(max_gen_toks=8, judge_max_tokens=8, judge_rating="text")
    store = Store(tmp_path / "out")
    outcome = _run(host, "m", "harness-zoo/tiny-llama", options, store)
    # a random tiny judge writes no [[rating]]: no score, a failed cell, never a fake number;
    # its judgments and samples are kept with the failure record
    assert outcome.status == "failed" and "no parsable [[rating]]" in outcome.error
    [failure] = (tmp_path / "out" / "failed").glob("*.json")
    record = json.loads(failure.read_text())
    assert failure.with_suffix(".samples.jsonl").exists()
    assert record["metrics"]["score_parse_failures"]["value"] == 2.0
    assert record["score_details"]["judge"] == {"backend": "local", "model": "harness-zoo/tiny-llama",
                                                "base_url": "", "temperature": 0.0, "max_tokens": 8,
                                                "rating": "text"}
    assert record["score_details"]["rating_methods"] == {"failed": 2}


ECHO_MODES = ("200", "401", "500", "garbage")


def echoing(server: Server) -> Reply:
    """A judge that quotes the request's Authorization header: in a rating (200), in error
    bodies (401, 500), and in a body that is not JSON; one mode per question."""
    modes: dict[str, str] = {}
    lock = threading.Lock()

    def reply(body: dict) -> tuple[int, bytes]:
        echo = f"you sent Authorization: {server.current.authorization}"
        with lock:
            mode = modes.setdefault(body["messages"][-1]["content"], ECHO_MODES[len(modes) % 4])
        if mode == "200":
            return chat_reply(f"{echo}. Rating: [[7]]", body["model"])
        if mode == "garbage":
            return 200, f"<html>{echo}</html>".encode()
        return int(mode), json.dumps({"error": {"message": echo, "type": mode}}).encode()

    reply.modes = modes  # type: ignore[attr-defined]
    return reply


def test_an_echoed_api_key_never_reaches_a_file_or_a_stream(server, judge_cache, tmp_path):
    """OPENAI_API_KEY set and a judge endpoint that echoes the Authorization header in a
    200 answer, a 401, a 500 (retried, so logged) and a garbage body: the key is in no file
    under --out or the judgment cache (logs, caches, records, samples, leaderboards) and
    in no output stream."""
    from support import run_cli

    secret = "plain-looking-secret-93f1c2d7"  # redacted as $OPENAI_API_KEY's value, not by shape
    server.reply = echoing(server)
    out = tmp_path / "out"
    result = run_cli("run", "-m", "single", "-t", "vicuna_bench", "--data", "embedded",
                     "--limit", "4", "--results", str(out), "-O", "max_gen_toks=4",
                     "-O", "judge_backend=openai", "-O", f"judge_base_url={server.url}",
                     "-O", "judge_retries=1", "-O", "judge_backoff_s=0.001",
                     env={"OPENAI_API_KEY": secret, "HARNESS_CACHE": str(judge_cache.parent)})
    assert result.returncode == 1, result.stderr
    assert sorted(server.reply.modes.values()) == sorted(ECHO_MODES)  # type: ignore[attr-defined]
    assert all(secret in header for header in server.authorizations)
    assert "[redacted]" in result.stderr
    assert secret not in result.stdout + result.stderr
    written = [p for p in (*out.rglob("*"), *judge_cache.rglob("*")) if p.is_file()]
    kinds = {p.name for p in written} | {p.suffix for p in written}
    assert {"log.txt", ".json"} <= kinds and list(judge_cache.rglob("*.json"))
    leaked = [p for p in written if secret.encode() in p.read_bytes()]
    assert leaked == []
    redacted = [p for p in written if b"[redacted]" in p.read_bytes()]
    assert any(p.is_relative_to(judge_cache) for p in redacted)  # the 200 answer, cached
    assert any(p.name == "log.txt" and "work" in p.parts for p in redacted)  # the 500, logged


# ----------------------------------------------------------------------------- rating probabilities


def test_rating_distribution_is_the_softmax_over_the_rating_logits():
    logits = {1: -1.0, 2: 0.5, 3: 2.0, 10: 1.0}
    exps = {r: math.exp(v) for r, v in logits.items()}
    hand = {r: e / sum(exps.values()) for r, e in exps.items()}
    assert rating_distribution(logits) == pytest.approx(hand)
    assert expected_rating(rating_distribution(logits)) == pytest.approx(
        sum(r * p for r, p in hand.items()))
    shifted = {r: v - 30.0 for r, v in logits.items()}  # log-probabilities: the same result
    assert rating_distribution(shifted) == pytest.approx(hand)


def test_candidate_scores_equal_a_hand_computation_on_fixed_logits():
    import torch

    table = torch.tensor([[0.0, 1.0, 2.0, 3.0], [3.0, 0.0, 1.0, -1.0], [0.5, 0.5, 2.0, 0.0],
                          [1.0, 2.0, 0.0, 0.0]])

    class FixedLogits(torch.nn.Module):
        """Logits that depend on the position only."""

        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": table[: input_ids.shape[1]].expand(
                input_ids.shape[0], -1, -1)})()

    prefix = [0, 1]  # the rating is read at position 1, its second token at position 2
    candidates = {1: [2], 2: [3, 1], 3: [0]}
    scores = candidate_log_scores(FixedLogits(), prefix, candidates)
    log_probs = table.log_softmax(-1)
    hand = {1: log_probs[1, 2], 2: log_probs[1, 3] + log_probs[2, 1], 3: log_probs[1, 0]}
    assert scores == pytest.approx({r: float(v) for r, v in hand.items()})


def logprob_reply(body: dict) -> tuple[int, bytes]:
    """Grades "7" in its text, with its probabilities over 6, 7, 8 (and a non-rating token)
    at the rating position, when asked for logprobs."""
    tokens = ["Decent", ".", " Rating", ":", " [[", "7", "]]"]
    alternatives = {"7": 0.6, "8": 0.3, "6": 0.05, "the": 0.05}
    content = [{"token": t, "logprob": -0.1, "bytes": None,
                "top_logprobs": ([{"token": a, "logprob": math.log(p), "bytes": None}
                                  for a, p in alternatives.items()] if t == "7" else [])}
               for t in tokens]
    status, payload = chat_reply("".join(tokens), body["model"])
    reply = json.loads(payload)
    if body.get("logprobs"):
        reply["choices"][0]["logprobs"] = {"content": content}
    return status, json.dumps(reply).encode()


def test_endpoint_judge_with_logprobs_scores_the_expected_rating(server, judge_cache, tmp_path):
    server.reply = logprob_reply
    host = load_host(["harness.tasks.vicuna_bench"])
    options = VicunaBenchOptions(max_gen_toks=8, judge_backend="openai", judge_base_url=server.url,
                                 judge_api_key_env=KEY_ENV, judge_backoff_s=0.001)
    outcome = _run(host, "m", "harness-zoo/tiny-llama", options, Store(tmp_path / "out"))
    assert outcome.status == "ok", outcome.error
    hand = (6 * 0.05 + 7 * 0.6 + 8 * 0.3) / (0.05 + 0.6 + 0.3)
    assert outcome.headline == pytest.approx(hand)
    assert all(body["logprobs"] is True and body["top_logprobs"] == 20 for body in server.requests)
    record = json.loads((outcome.path / "result.json").read_text())
    assert record["score_details"]["rating_methods"] == {"probabilities": 2}
    sample = json.loads((outcome.path / "samples.jsonl").open().readline())
    assert sample["judgment"]["single"]["rating_method"] == "probabilities"
    assert sample["judgment"]["single"]["text"] == "Decent. Rating: [[7]]"

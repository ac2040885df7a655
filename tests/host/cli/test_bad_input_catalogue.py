"""A catalogue of bad input: each case is one clear line on stderr naming what is wrong,
exit 2 for usage or 1 for a failed run, no traceback, and the results already in --out
stay intact."""

from __future__ import annotations

import gzip
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from harness import cli
from harness.results.records import CellRecord, RowInfo, Score, TaskInfo, row_key
from harness.results.store import Store

SMOKE = ["--data", "embedded", "--limit", "1"]


@dataclass(frozen=True)
class Case:
    name: str
    args: list[str]
    code: int
    message: str
    setup: Callable[[Path], None] | None = None  # writes files under the case folder


def _write(relative: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text))
    return setup


def _suite(text: str) -> Callable[[Path], None]:
    return _write("suite.yaml", text)


def _plugin(body: str) -> Callable[[Path], None]:
    return _write("plugins/bad_plugin.py", body)


PLUGIN = ["-p", "bad_plugin"]
SPEC_IMPORTS = "from harness.api import MethodSpec, TaskSpec, Metric, LmEvalPlan, hookimpl\n"


CASES = [
    # ---------------------------------------------------------------- names
    Case("block an unknown plugin", ["-p", "no:packlm", "list"], 2, "did you mean 'packllm'"),
    Case("unknown method", ["run", "-m", "packlm", "-t", "mmlu", *SMOKE], 2,
         "unknown method 'packlm' (did you mean 'packllm'?)"),
    Case("unknown task", ["run", "-m", "single", "-t", "mmmlu", *SMOKE], 2,
         "unknown task 'mmmlu' (did you mean 'mmlu'?)"),
    Case("unknown suite", ["run", "--suite", "embeded"], 2, "no suite file 'embeded'"),
    Case("unknown plugin to list", ["list", "lorra"], 2, "did you mean 'lora'"),
    Case("unknown command", ["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    Case("unknown flag", ["run", "--limt", "3"], 2, "unrecognized arguments: --limt"),
    Case("no method or task", ["run", "-m", "single"], 2, "name at least one --method and one --task"),
    Case("markup in a name", ["run", "-m", "[/INST]", "-t", "mmlu", *SMOKE], 2,
         "unknown method '[/INST]'"),
    Case("unknown zoo model", ["run", "-m", "single", "-t", "mmlu", "--models",
                               "harness-zoo/tiny-lama", *SMOKE], 1,
         "unknown zoo model 'harness-zoo/tiny-lama' (did you mean 'tiny-llama'?)"),
    Case("missing model folder", ["run", "-m", "single", "-t", "mmlu", "--models",
                                  "/nonexistent/model", *SMOKE], 1, "no such model folder"),
    Case("model folder without weights", ["run", "-m", "single", "-t", "mmlu", "--models",
                                          "{root}/empty_model", *SMOKE], 1,
         "no config.json or weight files", _write("empty_model/README", "nothing here")),
    Case("wrong number of models", ["run", "-m", "dexperts", "-t", "mmlu", "--models",
                                    "harness-zoo/tiny-llama,harness-zoo/tiny-gpt2", *SMOKE], 2,
         "takes pack of 3 models, got 2"),
    Case("one model for a pack", ["run", "-m", "packllm", "-t", "mmlu", "--models",
                                  "harness-zoo/tiny-llama", *SMOKE], 2,
         "takes pack of >= 2 models, got 1"),
    Case("two models for single", ["run", "-m", "single", "-t", "mmlu", "--models",
                                   "harness-zoo/tiny-llama,harness-zoo/tiny-gpt2", *SMOKE], 2,
         "takes 1 model, got 2"),
    # ---------------------------------------------------------------- method options
    Case("unknown method option", ["run", "-m", "packllm", "-t", "mmlu", "-o", "fuse=sim", *SMOKE],
         2, "unknown option 'fuse'"),
    Case("option outside its choices", ["run", "-m", "packllm", "-t", "mmlu", "-o", "fusion=max",
                                        *SMOKE], 2, "must be one of 'sim', 'opt'"),
    Case("option not a number", ["run", "-m", "packllm", "-t", "mmlu", "-o", "tau=warm", *SMOKE],
         2, "expected a finite number"),
    Case("option infinite", ["run", "-m", "packllm", "-t", "mmlu", "-o", "tau=.inf", *SMOKE], 2,
         "expected a finite number"),
    Case("option out of range", ["run", "-m", "packllm", "-t", "mmlu", "-o", "tau=-1", *SMOKE], 2,
         "tau must be positive"),
    Case("option without value", ["run", "-m", "packllm", "-t", "mmlu", "-o", "tau", *SMOKE], 2,
         "-o expects KEY=VALUE"),
    Case("option without key", ["run", "-m", "packllm", "-t", "mmlu", "-o", "=3", *SMOKE], 2,
         "-o expects KEY=VALUE"),
    Case("bad reference member", ["run", "-m", "packllm", "-t", "mmlu", "-o", "reference=first",
                                  *SMOKE], 2, "reference must be 'auto' or a member index"),
    Case("lora rank zero", ["run", "-m", "lora", "-t", "mmlu", "-o", "r=0", *SMOKE], 2,
         "r must be at least 1"),
    Case("lora dropout one", ["run", "-m", "lora", "-t", "mmlu", "-o", "dropout=1", *SMOKE], 2,
         "dropout must lie in [0, 1)"),
    Case("aligner no tokens", ["run", "-m", "aligner", "-t", "mmlu", "-o", "num_tokens=0", *SMOKE],
         2, "num_tokens must be at least 1"),
    Case("learning rate text", ["run", "-m", "aligner", "-t", "mmlu", "-o", "lr=fast", *SMOKE], 2,
         "expected a finite number"),
    Case("batch not a multiple", ["run", "-m", "lora", "-t", "mmlu", "-o", "batch_size=10", "-o",
                                  "micro_batch_size=4", *SMOKE], 2, "must be a multiple of"),
    Case("zero steps", ["run", "-m", "lora", "-t", "mmlu", "-o", "max_steps=0", *SMOKE], 2,
         "max_steps must be at least 1"),
    Case("fractional steps", ["run", "-m", "lora", "-t", "mmlu", "-o", "max_steps=2.5", *SMOKE], 2,
         "expected an integer"),
    Case("warm-up beyond the run", ["run", "-m", "lora", "-t", "mmlu", "-o", "warmup_ratio=2",
                                    *SMOKE], 2, "warmup_ratio must lie in [0, 1]"),
    Case("unknown optimizer", ["run", "-m", "lora", "-t", "mmlu", "-o", "optimizer=sgd", *SMOKE],
         2, "must be one of 'adamw', 'adafactor'"),
    Case("boolean as text", ["run", "-m", "lora", "-t", "mmlu", "-o", "loss_on_prompt=maybe",
                             *SMOKE], 2, "expected true or false"),
    Case("list for a single value", ["run", "-m", "packllm", "-t", "mmlu", "-o",
                                     "reference=[0,1]", *SMOKE], 2, "expected a single value"),
    Case("missing training data", ["run", "-m", "lora", "-t", "humaneval", "-o",
                                   "training_data={root}/missing.json", "-O",
                                   "allow_code_execution=true", *SMOKE], 1,
         "training data {root}/missing.json not found"),
    # ---------------------------------------------------------------- task options
    Case("negative shots", ["run", "-m", "single", "-t", "mmlu", "-O", "num_fewshot=-3", *SMOKE],
         2, "num_fewshot must be at least 0, got -3"),
    Case("fractional shots", ["run", "-m", "single", "-t", "mmlu", "-O", "num_fewshot=1.5",
                              *SMOKE], 2, "expected an integer"),
    Case("no generation budget", ["run", "-m", "single", "-t", "gsm8k", "-O", "max_gen_toks=0",
                                  *SMOKE], 2, "max_gen_toks must be at least 1"),
    Case("misspelt subject", ["run", "-m", "single", "-t", "mmlu", "-O", "subjects=astronmy",
                              *SMOKE], 2, "unknown MMLU subject 'astronmy'"),
    Case("unknown task option", ["run", "-m", "single", "-t", "mmlu", "-O", "shots=3", *SMOKE], 2,
         "unknown option 'shots'"),
    Case("sandbox without time", ["run", "-m", "single", "-t", "humaneval", "-O",
                                  "timeout_s=0", *SMOKE], 2, "timeout_s"),
    Case("sandbox without memory", ["run", "-m", "single", "-t", "humaneval", "-O",
                                    "memory_mb=1", *SMOKE], 2, "memory_mb"),
    Case("no samples", ["run", "-m", "single", "-t", "humaneval", "-O", "samples=0", *SMOKE], 2,
         "samples"),
    Case("code execution refused", ["run", "-m", "single", "-t", "humaneval", *SMOKE], 1,
         "refusing to run model-written code without consent"),
    Case("unknown flores language", ["run", "-m", "single", "-t", "flores", "-O",
                                     "directions=xxx_Latn-eng_Latn", *SMOKE], 1, "xxx_Latn"),
    Case("judge timeout zero", ["run", "-m", "single", "-t", "vicuna_bench", "-O",
                                "judge_timeout_s=0", *SMOKE], 2, "judge_timeout_s must be at least"),
    # ---------------------------------------------------------------- run settings
    Case("limit zero", ["run", "-m", "single", "-t", "mmlu", "--data", "embedded", "--limit", "0"],
         2, "limit must be a positive integer"),
    Case("negative limit", ["run", "-m", "single", "-t", "mmlu", "--data", "embedded", "--limit",
                            "-5"], 2, "limit must be a positive integer"),
    Case("limit not a number", ["run", "-m", "single", "-t", "mmlu", "--data", "embedded",
                                "--limit", "ten"], 2, "expected a finite number"),
    Case("seed not a number", ["run", "-m", "single", "-t", "mmlu", *SMOKE, "--seed", "abc"], 2,
         "expected a finite number"),
    Case("batch size zero", ["run", "-m", "single", "-t", "mmlu", *SMOKE, "--batch-size", "0"], 2,
         "batch_size must be a positive integer"),
    Case("batch size text", ["run", "-m", "single", "-t", "mmlu", *SMOKE, "--batch-size", "big"],
         2, "expected a finite number"),
    Case("unknown data mode", ["run", "-m", "single", "-t", "mmlu", "--data", "cloud"], 2,
         "must be one of 'hf', 'local', 'embedded'"),
    Case("local data without folder", ["run", "-m", "single", "-t", "mmlu", "--data", "local"], 2,
         "data local needs data_dir"),
    Case("missing data folder", ["run", "-m", "single", "-t", "mmlu", "--data-dir",
                                 "/nonexistent/data"], 2, "no such directory"),
    Case("data folder with embedded", ["run", "-m", "single", "-t", "mmlu", "--data", "embedded",
                                       "--data-dir", "{root}"], 2, "conflicts with data embedded"),
    Case("unknown dtype", ["run", "-m", "single", "-t", "mmlu", *SMOKE, "--dtype", "int8"], 2,
         "must be one of 'auto', 'float32', 'bfloat16', 'float16'"),
    Case("empty device", ["run", "-m", "single", "-t", "mmlu", *SMOKE, "--device", " "], 2,
         "device must not be empty"),
    Case("shard zero", ["run", "-m", "single", "-t", "mmlu", *SMOKE, "--shard", "0/2"], 2,
         "need 1 <= K <= N"),
    Case("shard beyond", ["run", "-m", "single", "-t", "mmlu", *SMOKE, "--shard", "3/2"], 2,
         "need 1 <= K <= N"),
    Case("shard text", ["run", "-m", "single", "-t", "mmlu", *SMOKE, "--shard", "half"], 2,
         "--shard expects K/N"),
    Case("output is a file", ["run", "-m", "single", "-t", "mmlu", *SMOKE, "--results",
                              "{root}/afile"], 1, "afile", _write("afile", "not a folder")),
    # ---------------------------------------------------------------- suite files
    Case("missing suite file", ["run", "--suite", "{root}/nope.yaml"], 2, "no suite file"),
    Case("malformed yaml", ["run", "--suite", "{root}/suite.yaml"], 2, "malformed YAML",
         _suite("methods: [single\ntasks: mmlu\n")),
    Case("suite is a list", ["run", "--suite", "{root}/suite.yaml"], 2,
         "expected a mapping with methods and tasks", _suite("- single\n- mmlu\n")),
    Case("empty suite", ["run", "--suite", "{root}/suite.yaml"], 2, "expected a mapping",
         _suite("")),
    Case("binary suite", ["run", "--suite", "{root}/suite.yaml"], 2, "unreadable",
         _write("suite.yaml", b"\xff\xfe\x00garbage")),
    Case("unknown suite key", ["run", "--suite", "{root}/suite.yaml"], 2, "unknown key(s) taks",
         _suite("methods: [single]\ntaks: [mmlu]\n")),
    Case("methods not a list", ["run", "--suite", "{root}/suite.yaml"], 2, "methods must be a list",
         _suite("methods: single\ntasks: [mmlu]\n")),
    Case("method entry without name", ["run", "--suite", "{root}/suite.yaml"], 2,
         "methods entry 1 needs a 'method' name", _suite("methods: [{models: [x]}]\ntasks: [mmlu]\n")),
    Case("suite seed text", ["run", "--suite", "{root}/suite.yaml"], 2, "seed",
         _suite("methods: [single]\ntasks: [mmlu]\nseed: abc\n")),
    Case("suite task number", ["run", "--suite", "{root}/suite.yaml"], 2,
         "tasks entry 1 needs a 'task' name, found 42", _suite("methods: [single]\ntasks: [42]\n")),
    Case("suite models number", ["run", "--suite", "{root}/suite.yaml"], 2,
         "methods entry 'single': models must be a list of names, found 5",
         _suite("methods: [{method: single, models: 5}]\ntasks: [mmlu]\n")),
    Case("suite model number", ["run", "--suite", "{root}/suite.yaml"], 2,
         "models must be a list of names, found [5]",
         _suite("methods: [{method: single, models: [5]}]\ntasks: [mmlu]\n")),
    Case("suite row tasks number", ["run", "--suite", "{root}/suite.yaml"], 2,
         "tasks must be a list of names, found 7",
         _suite("methods: [{method: single, tasks: 7}]\ntasks: [mmlu]\n")),
    Case("suite device list", ["run", "--suite", "{root}/suite.yaml"], 2,
         "expected a single value", _suite("methods: [single]\ntasks: [mmlu]\ndevice: [cpu]\n")),
    Case("suite options list", ["run", "--suite", "{root}/suite.yaml"], 2, "expected a mapping",
         _suite("methods: [{method: single, options: [1, 2]}]\ntasks: [mmlu]\n")),
    Case("suite limit zero", ["run", "--suite", "{root}/suite.yaml"], 2,
         "limit must be a positive integer",
         _suite("methods: [single]\ntasks: [mmlu]\ndata: embedded\nlimit: 0\n")),
    Case("suite row on absent task", ["run", "--suite", "{root}/suite.yaml", "--dry-run"], 2,
         "restricted to task(s) gsm8k that the run does not include",
         _suite("methods: [{method: single, tasks: [gsm8k]}]\ntasks: [mmlu]\ndata: embedded\n")),
    Case("suite row on unknown task", ["run", "--suite", "{root}/suite.yaml", "--dry-run"], 2,
         "unknown task 'gsmk'",
         _suite("methods: [{method: single, tasks: [gsmk]}]\ntasks: [mmlu]\ndata: embedded\n")),
    Case("suite label twice", ["run", "--suite", "{root}/suite.yaml", "--dry-run"], 2,
         "two different rows are labelled 'x'",
         _suite("methods:\n  - {method: packllm, label: x}\n  - {method: ensemble, label: x}\n"
                "tasks: [mmlu]\ndata: embedded\n")),
    Case("suite row twice", ["run", "--suite", "{root}/suite.yaml", "--dry-run"], 2,
         "repeats row", _suite("methods: [single, single]\ntasks: [mmlu]\ndata: embedded\n")),
    # ---------------------------------------------------------------- data files
    Case("mmlu csv short row", ["run", "-m", "single", "-t", "mmlu", "--data-dir", "{root}/data",
                                "--limit", "1"], 1, "astronomy_test.csv:2: expected 6 columns",
         lambda root: (_write("data/mmlu/data/test/astronomy_test.csv",
                              "Q?,a,b,c,d,A\nQ2?,a,b,c,E\n")(root),
                       _write("data/mmlu/data/dev/astronomy_dev.csv", "Q?,a,b,c,d,A\n")(root))),
    Case("mmlu bad answer letter", ["run", "-m", "single", "-t", "mmlu", "--data-dir",
                                    "{root}/data", "--limit", "1"], 1, "answer must be one of",
         lambda root: (_write("data/mmlu/data/test/astronomy_test.csv", "Q?,a,b,c,d,Z\n")(root),
                       _write("data/mmlu/data/dev/astronomy_dev.csv", "Q?,a,b,c,d,A\n")(root))),
    Case("mmlu dev file missing", ["run", "-m", "single", "-t", "mmlu", "--data-dir",
                                   "{root}/data", "--limit", "1"], 1, "missing data file",
         _write("data/mmlu/data/test/astronomy_test.csv", "Q?,a,b,c,d,A\n")),
    Case("gsm8k missing", ["run", "-m", "single", "-t", "gsm8k", "--data-dir", "{root}/data",
                           "--limit", "1"], 1, "GSM8K test.jsonl not found",
         _write("data/other/readme.txt", "")),
    Case("gsm8k malformed json", ["run", "-m", "single", "-t", "gsm8k", "--data-dir",
                                  "{root}/data", "--limit", "1"], 1, "test.jsonl:2: malformed JSON",
         lambda root: (_write("data/gsm8k/test.jsonl", '{"question": "q", "answer": "1"}\n{oops\n')(root),
                       _write("data/gsm8k/train.jsonl", '{"question": "q", "answer": "1"}\n')(root))),
    Case("gsm8k missing field", ["run", "-m", "single", "-t", "gsm8k", "--data-dir", "{root}/data",
                                 "--limit", "1"], 1, "missing field(s) answer",
         lambda root: (_write("data/gsm8k/test.jsonl", '{"question": "q"}\n')(root),
                       _write("data/gsm8k/train.jsonl", '{"question": "q", "answer": "1"}\n')(root))),
    Case("humaneval truncated gzip", ["run", "-m", "single", "-t", "humaneval", "--data-dir",
                                      "{root}/data", "--limit", "1", "-O",
                                      "allow_code_execution=true"], 1, "HumanEval.jsonl.gz",
         _write("data/humaneval/HumanEval.jsonl.gz",
                gzip.compress(b'{"task_id": "x", "prompt": "def f():\\n"}\n' * 50)[:40])),
    Case("vicuna question without text", ["run", "-m", "single", "-t", "vicuna_bench",
                                          "--data-dir", "{root}/data", "--limit", "1"], 1,
         "question.jsonl:1", _write("data/vicuna_bench/question.jsonl",
                                    '{"question_id": 1, "category": "x"}\n')),
    Case("coco not a captions file", ["run", "-m", "single", "-t", "coco_captioning", "--models",
                                      "harness-zoo/tiny-vlm", "--data-dir", "{root}/data",
                                      "--limit", "1"], 1, "not a COCO captions file",
         _write("data/coco_karpathy/captions_test5k.json", "[1, 2, 3]")),
    # ---------------------------------------------------------------- plugins
    Case("plugin that does not import", [*PLUGIN, "list"], 1, "failed to import",
         _plugin("raise RuntimeError('boom')\n")),
    Case("plugin with a misspelt hook", [*PLUGIN, "list"], 1, "unknown hook",
         _plugin("from harness.api import hookimpl\n\n@hookimpl\ndef harness_method():\n"
                 "    return []\n")),
    Case("plugin returning a string", [*PLUGIN, "list"], 1, "must return a list of MethodSpec",
         _plugin("from harness.api import hookimpl\n\n@hookimpl\ndef harness_methods():\n"
                 "    return 'single'\n")),
    Case("plugin returning non-specs", [*PLUGIN, "list"], 1, "expected a MethodSpec, got dict",
         _plugin("from harness.api import hookimpl\n\n@hookimpl\ndef harness_methods():\n"
                 "    return [{'name': 'x'}]\n")),
    Case("plugin with bad options", [*PLUGIN, "list"], 1, "options must be a dataclass",
         _plugin(SPEC_IMPORTS + "\n@hookimpl\ndef harness_methods():\n    return [MethodSpec("
                 "name='x', description='', build=print, options=dict)]\n")),
    Case("plugin with a bad name", [*PLUGIN, "list"], 1, "the name must be an identifier",
         _plugin(SPEC_IMPORTS + "\n@hookimpl\ndef harness_methods():\n    return [MethodSpec("
                 "name='two words', description='', build=print)]\n")),
    Case("plugin method twice", [*PLUGIN, "list"], 1, "method 'single' is provided twice",
         _plugin(SPEC_IMPORTS + "\n@hookimpl\ndef harness_methods():\n    return [MethodSpec("
                 "name='single', description='', build=print)]\n")),
    Case("plugin plan with a str path", [*PLUGIN, "run", "-m", "single", "-t", "badtask",
                                         *SMOKE], 2,
         "LmEvalPlan.data_files must be a list of Paths",
         _plugin(SPEC_IMPORTS + "\ndef plan(ctx):\n    return LmEvalPlan(tasks=['x'], "
                 "data_files=['a.txt'])\n\n@hookimpl\ndef harness_tasks():\n    return "
                 "[TaskSpec(name='badtask', description='', headline=Metric('acc', 'acc'), "
                 "lm_eval=plan)]\n")),
    Case("plugin plan not a plan", [*PLUGIN, "run", "-m", "single", "-t", "badtask", *SMOKE], 2,
         "lm_eval must return an LmEvalPlan, got str",
         _plugin(SPEC_IMPORTS + "\n@hookimpl\ndef harness_tasks():\n    return [TaskSpec("
                 "name='badtask', description='', headline=Metric('acc', 'acc'), "
                 "lm_eval=lambda ctx: 'mmlu')]\n")),
    # ---------------------------------------------------------------- results folders
    Case("leaderboard of nothing", ["leaderboard", "--results", "{root}/nothing"], 2,
         "no results (expected a cells/ folder)"),
    Case("verify nothing", ["verify", "--results", "{root}/nothing"], 2, "no such results folder"),
    Case("verify a damaged cell", ["verify", "--results", "{root}/damaged"], 1,
         "cannot be trusted", _write("damaged/cells/single/mmlu/0000000000000000/result.json",
                                     "{garbage")),
]


def _finished_cell(root: Path) -> Path:
    models = [{"id": "harness-zoo/tiny-llama", "revision": "main", "dtype": "auto"}]
    record = CellRecord(status="ok", fingerprint="a" * 64,
                        row=RowInfo(row_key("single", models, {}), "single", "single (tiny-llama)",
                                    {}, models),
                        task=TaskInfo("mmlu", {}, "acc,none", "accuracy"), identity={},
                        finished_at="2026-01-01T00:00:00", headline=Score(0.5))
    return Store(root).commit_cell(record, [{"doc_id": 0}])


def test_the_catalogue_is_large_and_unique() -> None:
    assert len(CASES) >= 70
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_input(case: Case, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    monkeypatch.delitem(sys.modules, "bad_plugin", raising=False)  # each case its own
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if case.setup:
        case.setup(tmp_path)
    out = tmp_path / "out"
    finished = _finished_cell(out)
    before = (finished / "result.json").read_bytes()
    args = [a.format(root=tmp_path) for a in case.args]
    if args[0] == "run" or (len(args) > 2 and "run" in args[:3]):
        if "--results" not in args:
            args += ["--results", str(out)]
    try:
        code = cli.main(args)
    except SystemExit as exc:  # argparse
        code = exc.code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == case.code, captured.err
    assert len(lines) == 1, f"expected one line, got: {captured.err}"
    assert case.message.format(root=tmp_path) in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert (finished / "result.json").read_bytes() == before
    assert not Store(out).verify()

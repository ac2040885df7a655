"""The contract between the host and its plugins: every type a hook receives or returns.

`harness.hookspecs` names the hooks; this package holds what travels through them, in three
parts: what method and task plugins hand to the host and receive from it (`specs`: method
and task descriptors, build and task contexts, metrics; `reports`: what a method and a
task record beside their numbers), the matrix a run works through
(`matrix`: rows, columns, cells, plans, jobs, outcomes), and what executor and writer
plugins receive and return (`outputs`). Nothing here imports torch, transformers or
lm-eval, and nothing here imports the host: the host, the runner and the reports depend on
the contract, never the other way round. Plugin authors import these names from
`harness.api`.
"""

from harness.contract.matrix import (Cell, CellOutcome, Job, MethodRow, Plan, State, TaskColumn,
                                     row_label)
from harness.contract.outputs import (JOBS_FOLDER, ExecutionContext, ExecutorSpec, PluginHost,
                                      ReportWriter)
from harness.contract.reports import MethodReport, ScoreDetails
from harness.contract.specs import (ANCHOR_AUGMENTING, MODEL_PACK, ONE_MODEL, TEXT_CAPABILITIES,
                                    BuildContext, Capability, CorpusMetric, HarnessLM, LmEvalPlan,
                                    MethodSpec, Metric, MetricValues, ModelRef, ModelSlots,
                                    NoOptions, Samples, TaskContext, TaskSpec, Training, at_least,
                                    options_to_dict)
from harness.options import option
from harness.settings import DataSource

__all__ = [
    # method and task plugins
    "MethodSpec", "TaskSpec", "Metric", "CorpusMetric", "Capability", "TEXT_CAPABILITIES",
    "ModelSlots", "ONE_MODEL", "MODEL_PACK", "ANCHOR_AUGMENTING", "Training", "NoOptions",
    "option", "at_least", "options_to_dict",
    "BuildContext", "TaskContext", "DataSource", "HarnessLM", "ModelRef", "LmEvalPlan", "Samples",
    "MetricValues", "MethodReport", "ScoreDetails",
    # the matrix
    "MethodRow", "TaskColumn", "Cell", "Plan", "State", "Job", "CellOutcome", "row_label",
    # executors and writers
    "ExecutionContext", "ExecutorSpec", "PluginHost", "JOBS_FOLDER", "ReportWriter",
]

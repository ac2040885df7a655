"""The public surface for plugin authors: import from here, nothing else of `harness`.

Everything a method or task plugin needs is re-exported below; the modules behind these
names may be reorganised between releases, this module's names will not (pytest's public
`pytest` over its private `_pytest` is the model). Importing it stays cheap: no torch,
transformers or lm-eval, so `harness list` can load every plugin.

A method plugin::

    from harness.api import MethodSpec, hookimpl

    @hookimpl
    def harness_methods():
        return [MethodSpec(name="mine", description="...", build=build)]

`build(ctx: BuildContext)` returns an lm-eval `LM`; a task plugin returns `TaskSpec`s whose
`lm_eval(ctx: TaskContext)` returns an `LmEvalPlan`.

Methods of one family share toolkits that are public as well: `harness.fusion` (logit
fusion of packs with different tokenizers), `harness.fuse` (gradients across tokenizers),
`harness.isolation._sandbox` (running generated code) and `harness.judge` (LLM judges).
`tests/host/test_public_surface.py` keeps the built-in plugins to these.
"""

from harness import hookimpl
from harness.contract import (ANCHOR_AUGMENTING, MODEL_PACK, ONE_MODEL, TEXT_CAPABILITIES,
                              BuildContext, Capability, CorpusMetric, DataSource, HarnessLM,
                              LmEvalPlan, MethodReport, MethodSpec, Metric, MetricValues, ModelRef,
                              ModelSlots, NoOptions, Samples, ScoreDetails, TaskContext, TaskSpec,
                              Training, at_least, option)
from harness.data import (dataset_dict, first_existing, first_response, read_csv_rows,
                          read_json_file, read_jsonl_rows)
from harness.errors import (DataError, HarnessError, MissingTool, ModelLoadError, UsageError,
                            did_you_mean)
from harness.lm import count_parameters, hf_lm, hf_multimodal_lm
from harness.models.loading import (is_vision_language, load_causal_lm, load_clip, load_processor,
                                    load_tokenizer, load_vision_lm, model_identity, model_location)
from harness.settings import cache_root, default_device
from harness.stats import mean_and_stderr
from harness.training import (EarlyStopping, TrainingOptions, fit, fitted_lm, freeze, peft_model,
                              trainable_parameters)
from harness.training.multimodal import (is_multimodal, language_model_targets, vision_tower,
                                         vision_when_multimodal)
from harness.zoo.kv import DATASETS as KV_DATASETS
from harness.zoo.kv import Dataset as KvDataset
from harness.zoo.kv import examples as kv_examples
from harness.zoo.scenes import INVERSE as SCENE_INVERSE
from harness.zoo.scenes import random_scene
from harness.zoo.scenes import render as render_scene
from harness.zoo.vlm import scene_from_parts

__all__ = [
    # registration
    "hookimpl", "MethodSpec", "TaskSpec", "Metric", "CorpusMetric", "Capability",
    "TEXT_CAPABILITIES",
    "ModelSlots", "ONE_MODEL", "MODEL_PACK", "ANCHOR_AUGMENTING", "Training", "NoOptions",
    "option", "at_least",
    # what the host hands to plugins
    "BuildContext", "TaskContext", "DataSource", "LmEvalPlan", "HarnessLM", "ModelRef", "Samples",
    "MetricValues", "MethodReport", "ScoreDetails",
    # helpers for tasks: original-format readers with line-precise errors
    "dataset_dict", "first_existing", "first_response", "read_csv_rows", "read_json_file",
    "read_jsonl_rows",
    "mean_and_stderr", "cache_root",
    # the key-value arithmetic world the kv zoo models were trained in (CALM's Table 1)
    "KV_DATASETS", "KvDataset", "kv_examples",
    # the scene world the scene VLM was pretrained in (harness.zoo.scenes, AdaLink's claim)
    "random_scene", "render_scene", "scene_from_parts", "SCENE_INVERSE",
    # helpers for methods
    "load_causal_lm", "load_tokenizer", "load_vision_lm", "load_processor", "load_clip",
    "is_vision_language", "default_device", "model_identity", "model_location", "hf_lm", "hf_multimodal_lm", "count_parameters",
    # the shared training path
    "TrainingOptions", "EarlyStopping", "fit", "fitted_lm", "freeze", "trainable_parameters",
    "peft_model", "is_multimodal", "language_model_targets", "vision_tower",
    "vision_when_multimodal",
    # errors that become one line and an exit status
    "HarnessError", "UsageError", "DataError", "ModelLoadError", "MissingTool", "did_you_mean",
]

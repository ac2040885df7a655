"""`coco_captioning`: COCO image captioning, Karpathy test split, scored with pycocoevalcap.

A multimodal lm-eval task (`doc_to_image`): each document is one image, the method's LM
(lm-eval's `MULTIMODAL` convention, e.g. HFMultimodalLM) generates a caption greedily, and
the merged captions are scored once with pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L and
CIDEr (the headline; pycocoevalcap's scale, where 1.0 prints as "100" in papers), plus
SPICE when Stanford CoreNLP 3.6.0 is available (otherwise SPICE is null, never 0).

Local data: the standard COCO captions JSON (`captions_test5k.json`: `images` +
`annotations`) under `<data-dir>/coco_karpathy/`, and the images, which are not
redistributed: `-O image_dir=/path/to/val2014` (default `<data-dir>/coco_karpathy/images`).
Methods that train read a COCO-format train file from the same folder and image directory
(`-O train_annotations=captions_train.json`, e.g. the Karpathy train+restval split).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from harness.api import (Capability, CorpusMetric, DataError, LmEvalPlan, Metric, MetricValues,
                         MissingTool, Samples, ScoreDetails, TaskContext, TaskSpec, at_least,
                         dataset_dict, first_existing, first_response, hookimpl, option,
                         read_json_file)

FIXTURES = Path(__file__).parent / "fixtures"
EMBEDDED_ANNOTATIONS = FIXTURES / "captions.json"
DEFAULT_PROMPT = "<image>Provide a one-sentence caption for the provided image."
IMAGE_PLACEHOLDER = "<image>"  # lm-eval replaces it with the model's own image token



@dataclass(frozen=True)
class CocoOptions:
    annotations: str = option(
        "captions_test5k.json", 'COCO captions file under <data-dir>/coco_karpathy/')
    image_dir: str = option(
        "", 'folder of the COCO images; default <data-dir>/coco_karpathy/images')
    prompt: str = option(DEFAULT_PROMPT, '"<image>" marks where the image goes')
    max_gen_toks: int = option(32, 'token budget per caption')
    corenlp_dir: str = option("", 'folder with the CoreNLP 3.6.0 jars SPICE needs (optional)')
    train_annotations: str = option(
        "captions_train.json", 'COCO captions file training methods fit on (images from image_dir)')

    def __post_init__(self) -> None:
        at_least(self, max_gen_toks=1)


def read_coco_captions(path: Path) -> list[dict[str, Any]]:
    """Images of a COCO captions file with their reference captions, in the file's order."""
    coco = read_json_file(path, "COCO captions file")
    if not isinstance(coco, dict) or not {"images", "annotations"} <= coco.keys():
        raise DataError(f"{path}: not a COCO captions file (needs 'images' and 'annotations')")
    images: dict[int, dict[str, Any]] = {}
    for number, image in enumerate(coco["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise DataError(f"{path}: images[{number}] lacks 'id' or 'file_name'")
        images[image["id"]] = {"image_id": image["id"], "file_name": image["file_name"],
                               "references": []}
    for number, annotation in enumerate(coco["annotations"]):
        if not isinstance(annotation, dict) or not {"image_id", "caption"} <= annotation.keys():
            raise DataError(f"{path}: annotations[{number}] lacks 'image_id' or 'caption'")
        if annotation["image_id"] not in images:
            raise DataError(f"{path}: annotations[{number}] refers to unknown image "
                            f"{annotation['image_id']}")
        images[annotation["image_id"]]["references"].append(annotation["caption"])
    uncaptioned = [i for i, image in images.items() if not image["references"]]
    if uncaptioned:
        raise DataError(f"{path}: {len(uncaptioned)} image(s) without captions, e.g. {uncaptioned[0]}")
    if not images:
        raise DataError(f"{path}: no images")
    return list(images.values())


def image_path(image_dir: Path, file_name: str) -> Path:
    """Where an image lives: `<image_dir>/<file_name>`, or in the COCO release's split
    folder below it (`val2014/COCO_val2014_…jpg`)."""
    direct = image_dir / file_name
    parts = file_name.split("_")
    if direct.exists() or len(parts) < 3:
        return direct
    nested = image_dir / parts[1] / file_name
    return nested if nested.exists() else direct


def load_documents(annotations: Path, image_dir: Path, **_: Any) -> Any:
    rows = [dict(image, image_path=str(image_path(image_dir, image["file_name"])))
            for image in read_coco_captions(annotations)]
    return dataset_dict({"test": rows})


def open_image(doc: dict[str, Any]) -> list[Any]:
    from PIL import Image

    with Image.open(doc["image_path"]) as image:
        return [image.convert("RGB")]


def data_location(ctx: TaskContext) -> tuple[Path, Path]:
    """(annotations file, image folder) for this run."""
    options: CocoOptions = ctx.options
    if ctx.data.kind == "embedded":
        return EMBEDDED_ANNOTATIONS, FIXTURES / "images"
    if ctx.data.kind == "hf":
        raise DataError("coco_captioning reads local files only: pass --data-dir with "
                        "coco_karpathy/captions_test5k.json and -O image_dir=<COCO val2014 images>")
    base = ctx.data.folder
    folder = first_existing([base / "coco_karpathy", base], "COCO Karpathy folder").resolve()
    annotations = first_existing([folder / options.annotations], "COCO captions file")
    image_dir = Path(options.image_dir).expanduser() if options.image_dir else folder / "images"
    return annotations, image_dir.resolve()


def lm_eval_plan(ctx: TaskContext) -> LmEvalPlan:
    options: CocoOptions = ctx.options
    annotations, image_dir = data_location(ctx)
    config = {
        "task": "coco_captioning",
        "custom_dataset": partial(load_documents, annotations, image_dir),
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_image": open_image,
        "doc_to_text": options.prompt,
        "doc_to_target": "{{references[0]}}",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": options.max_gen_toks,
                              "do_sample": False, "temperature": 0.0},
        "metric_list": [{"metric": "bypass", "aggregation": "bypass", "higher_is_better": True}],
        "metadata": {"version": 1},
    }
    files = [annotations]
    if ctx.data.kind == "embedded":
        files += sorted((FIXTURES / "images").iterdir())
    return LmEvalPlan(tasks=[config], num_fewshot=0, data_files=files, uses_stock_tasks=False)


def preflight(ctx: TaskContext) -> str | None:
    """Refuse before any model loads: no Java/pycocoevalcap, or images that are not there."""
    from harness.tasks.coco_captioning.scoring import java_problem

    problem = java_problem()
    if problem:
        raise MissingTool(problem)
    options: CocoOptions = ctx.options
    if IMAGE_PLACEHOLDER not in options.prompt:
        return f"coco_captioning: the prompt must contain {IMAGE_PLACEHOLDER!r} where the image goes"
    annotations, image_dir = data_location(ctx)
    images = read_coco_captions(annotations)
    needed = images[: ctx.limit] if ctx.limit else images
    missing = [i["file_name"] for i in needed if not image_path(image_dir, i["file_name"]).is_file()]
    if missing:
        return (f"COCO images missing: {len(missing)} of {len(needed)} under {image_dir} "
                f"(e.g. {', '.join(missing[:3])}); pass -O image_dir=<folder with the "
                f"COCO val2014 images>")
    return None


def training_examples(ctx: TaskContext) -> list[dict[str, str]]:
    """One example per (image, reference caption): the evaluation prompt (the text lm-eval
    sends, `<image>` included) as prompt, " <caption>" as target, the image file as "image".

    Embedded data trains on the fixture itself (the only captioned images shipped offline;
    the Karpathy train split is not), so an embedded fit is a smoke test, not a held-out
    result. Local data without the train file yields no examples.
    """
    options: CocoOptions = ctx.options
    annotations, image_dir = data_location(ctx)
    if ctx.data.kind != "embedded":
        annotations = annotations.parent / options.train_annotations
        if not options.train_annotations or not annotations.is_file():
            return []
    return [{"prompt": options.prompt, "target": f" {caption}",
             "image": str(image_path(image_dir, image["file_name"]))}
            for image in read_coco_captions(annotations) for caption in image["references"]]


def score(samples: Samples, ctx: TaskContext) -> MetricValues:
    from harness.tasks.coco_captioning.scoring import (cache_dir, caption_scores,
                                                       pycocoevalcap_version)

    references = {s["doc"]["image_id"]: s["doc"]["references"] for s in samples}
    predictions = {s["doc"]["image_id"]: first_response(s) for s in samples}
    options: CocoOptions = ctx.options
    corenlp = Path(options.corenlp_dir).expanduser() if options.corenlp_dir else None
    scores, notes, cider_per_image = caption_scores(references, predictions, cache_dir(),
                                                    corenlp)
    for sample in samples:  # stored with the samples: paired tests resample them
        sample["cider"] = cider_per_image[sample["doc"]["image_id"]]
    ctx.score_details.facts.update(notes, images=len(predictions), pycocoevalcap=pycocoevalcap_version())
    return {key: (value, None) for key, value in scores.items()}


def image_cider(samples: Samples, _details: ScoreDetails) -> dict[tuple[str, Any], float]:
    """Each image's CIDEr as `score` stored it (the IDF of the whole scored set held
    fixed): their mean is the corpus CIDEr."""
    return {(s["task"], s["doc_id"]): float(s["cider"]) for s in samples
            if isinstance(s.get("cider"), (int, float))}


@hookimpl
def harness_tasks() -> list[TaskSpec]:
    return [TaskSpec(
        name="coco_captioning",
        description="COCO captions (Karpathy 5k test), greedy captions from the image; "
                    "pycocoevalcap CIDEr.",
        headline=Metric("CIDEr", "CIDEr"),
        metrics=(Metric("Bleu_4", "BLEU-4"), Metric("METEOR", "METEOR"),
                 Metric("ROUGE_L", "ROUGE-L"), Metric("SPICE", "SPICE")),
        lm_eval=lm_eval_plan,
        requires=frozenset({Capability.VISION, Capability.GENERATION}),
        local_format="COCO captions JSON coco_karpathy/captions_test5k.json + images "
                     "(-O image_dir=...)",
        embedded_data=FIXTURES,
        options=CocoOptions,
        score=score,
        corpus_metrics=(CorpusMetric("CIDEr", image_cider),),
        preflight=preflight,
        training_examples=training_examples,
    )]

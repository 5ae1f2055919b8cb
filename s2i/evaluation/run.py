"""Stage F's orchestration: an evaluation folder → its context → the registered metrics → metrics.json and
the report.

``evaluate.py`` parses its options and calls, in order: :func:`build_context` (reads and checks what
earlier stages wrote), :func:`run_metrics` (each chosen metric of :data:`s2i.metrics.EVALUATION_METRICS`,
timed), :func:`write_metrics` (``metrics.json`` in the evaluated folder) and :func:`write_evaluation_report`
(``report.html`` in the generator's run folder: the metrics, the training curves, and a sample of test
captions with what was drawn for them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from s2i.config import ConfigError
from s2i.data.manifests import load_manifest
from s2i.distributed import resolve_device
from s2i.evaluation.report import Sample, write_report
from s2i.evaluation.scoring import (
    caption_voices,
    finite,
    generated_images,
    generated_resolutions,
    pick_samples,
    voice_groups,
)
from s2i.files import write_json_atomic
from s2i.metrics import EVALUATION_METRICS, evaluation_metric
from s2i.metrics.context import EvaluationContext, EvaluationError, MetricSettings
from s2i.runs import read_jsonl

__all__ = [
    "METRICS_NAME", "build_context", "default_run_dir", "report_samples", "run_metrics", "training_curves",
    "write_evaluation_report", "write_metrics",
]

METRICS_NAME = "metrics.json"


def build_context(images: Path, *, dataset: str, data_root: Path, test_json: Path, train_json: Path,
                  resolution: int | None = None, device: str = "auto", settings: MetricSettings | None = None,
                  log: Callable[[str], None] = print) -> EvaluationContext:
    """Reads and checks one evaluation folder's inputs.

    Args:
        images: the generator's evaluation folder (``…/Model/iteration<N>``, holding ``flat_<res>/``).
        dataset, data_root: the manifest schema and the dataset folder.
        test_json, train_json: the manifests; the training one only says which TTS voices training heard
            (a missing file: no voice is seen).
        resolution: which ``flat_<res>`` to score (None: the highest).
        device: ``auto``, ``cpu`` or ``cuda``, resolved once every input has been checked.
        settings: the metrics' options.
        log: receives the metrics' lines.

    Raises:
        EvaluationError: a missing folder or image, a generated file that matches no test caption.
        ConfigError: ``resolution`` has no ``flat_`` folder.
    """
    if not images.is_dir():
        raise EvaluationError(f"--images {images} is not a folder; expected the generator's evaluation output "
                              f"(…/Model/iteration<N>)")
    resolutions = generated_resolutions(images)
    res = resolution or resolutions[-1]
    if res not in resolutions:
        raise ConfigError(f"--resolution {res}: {images} has flat_ folders for {resolutions} only")
    manifest = load_manifest(test_json, dataset)
    gen = generated_images(images / f"flat_{res}", manifest)
    real_paths = [manifest.image_path(i) for i in range(len(manifest))]
    missing = [p for p in real_paths if not p.is_file()]
    if missing:
        raise EvaluationError(f"{len(missing)} real test image(s) missing, e.g. {missing[0]} (listed in {manifest.path})")
    test_voices = caption_voices(manifest.path)
    train_voices = caption_voices(train_json) if train_json.is_file() else []
    groups, voices = voice_groups(test_voices, train_voices)
    if not voices["held_out"]:
        groups.pop("held-out voices")
    if not voices["seen"]:
        groups.pop("seen voices")
    return EvaluationContext(images=images, resolution=res, dataset=dataset, data_root=data_root, manifest=manifest,
                             generated=gen, real_paths=real_paths, caption_voices=test_voices, voices=voices,
                             groups=groups, device=resolve_device(device), settings=settings or MetricSettings(),
                             log=log)


def run_metrics(ctx: EvaluationContext, names: Iterable[str]) -> dict[str, Any]:
    """The metrics of ``metrics.json``: what was scored, the voices, each chosen metric's sections (in the
    order of :data:`~s2i.metrics.EVALUATION_METRICS`) and its seconds; NaN and infinities become None."""
    chosen = set(names)
    unknown = sorted(chosen - set(EVALUATION_METRICS))
    if unknown:
        raise KeyError(f"unknown evaluation metric(s) {unknown}; known: {', '.join(EVALUATION_METRICS)}")
    gen, voices = ctx.generated, ctx.voices
    metrics: dict[str, Any] = {
        "generated": {"folder": str(ctx.images), "resolution": ctx.resolution, "images": len(gen),
                      "captions": len({(g.item, g.caption) for g in gen}), "test_images": len(ctx.manifest)},
        "voices": {"seen in training": ", ".join(voices["seen"]) or "(no records)",
                   "held out of training": ", ".join(voices["held_out"]) or "(none)"},
    }
    timings = {}
    for name in EVALUATION_METRICS:
        if name in chosen:
            t0 = time.time()
            metrics.update(evaluation_metric(name)(ctx))
            timings[name] = time.time() - t0
    metrics["seconds"] = timings
    return finite(metrics)


def write_metrics(metrics: dict[str, Any], images: Path) -> Path:
    """``metrics.json`` in the evaluated folder, written atomically; returns its path."""
    return write_json_atomic(images / METRICS_NAME, metrics, indent=1)


def default_run_dir(images: Path) -> Path:
    """Where the report goes by default: the generator's run folder (``<images>/../..`` when ``images`` is
    ``…/Model/iteration<N>``), else the evaluated folder itself."""
    return images.parent.parent if images.parent.name == "Model" else images


def report_samples(ctx: EvaluationContext, n: int, seed: int = 0) -> list[Sample]:
    """Up to ``n`` test captions for the report (:func:`~s2i.evaluation.scoring.pick_samples`), each with its
    clip, real image, generated images (by sample), voice, and the metrics' annotations of its images."""
    gen, manifest, offsets = ctx.generated, ctx.manifest, ctx.offsets
    n_captions = sum(len(it.audio) for it in manifest.items)
    held = ctx.groups.get("held-out voices", np.zeros(n_captions, dtype=bool))
    by_pair: dict[tuple[int, int], list[int]] = {}
    for j, g in enumerate(gen):
        by_pair.setdefault((g.item, g.caption), []).append(j)
    samples = []
    for item, cap in pick_samples(gen, n, held, offsets, seed):
        idx = sorted(by_pair[(item, cap)], key=lambda j: gen[j].sample)
        voices = ctx.caption_voices
        voice = voices[item][cap] if item < len(voices) and cap < len(voices[item]) else None
        note = "; ".join(f"{label}: " + ", ".join(per_image[j] for j in idx)
                         for label, per_image in ctx.annotations.items())
        samples.append(Sample(caption=manifest.items[item].captions[cap], audio=manifest.audio_path(item, cap),
                              real_image=ctx.real_paths[item], generated=[gen[j].path for j in idx],
                              label=manifest.items[item].class_name,
                              voice=(f"{voice} (held out of training)" if held[offsets[item] + cap] else voice) or "",
                              note=note))
    return samples


def training_curves(run_dir: Path, encoder_run: str | Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """The speech encoder's ``metrics.jsonl`` and the generator's ``losses.jsonl``, where they exist."""
    curves = {}
    if encoder_run and (Path(encoder_run) / "metrics.jsonl").is_file():
        curves["speech encoder"] = read_jsonl(Path(encoder_run) / "metrics.jsonl")
    if (run_dir / "losses.jsonl").is_file():
        curves["generator"] = read_jsonl(run_dir / "losses.jsonl")
    return curves


def write_evaluation_report(ctx: EvaluationContext, metrics: dict[str, Any], run_dir: Path, *, command: str,
                            samples: int = 12, seed: int = 0, encoder_run: str | Path | None = None) -> Path:
    """``run_dir/report.html``: the metrics (without the seconds), the curves and ``samples`` test captions.

    Args:
        command: how the evaluation was run, quoted in the report's first note.
    """
    chosen = report_samples(ctx, samples, seed)
    curves = training_curves(run_dir, encoder_run)
    notes = [f"Evaluated {ctx.images} at {ctx.resolution}px with `{command}`."]
    if "inception_score" in metrics and "proxy" in metrics["inception_score"]["name"].lower():
        notes.append("The Inception Score here is a proxy from EfficientNet-Lite0's ImageNet classifier; the paper's "
                     "IS used an Inception-v3 fine-tuned on the test classes, which is no longer distributed.")
    return write_report(run_dir, title=f"Speech-to-image results: {ctx.dataset}, {ctx.images.name}",
                        metrics={k: v for k, v in metrics.items() if k != "seconds"}, curves=curves, samples=chosen,
                        notes=notes)

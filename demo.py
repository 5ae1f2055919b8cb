"""The offline demo: speak, train and draw on the shapes dataset, on a CPU, in minutes (`make demo`).

    python demo.py                 # every stage; a second run reuses the stages that finished
    python demo.py --force         # run every stage again
    python demo.py --from generator    # run from this stage on (stages: see --list)

Each stage is one of the pipeline's own scripts, run as a researcher would run it from bash (the command
is printed), with its progress bar and wall time. Training captions are spoken by --train_voices (34
espeak voices and variants), never by the --held_out_voices; the test captions by the TTS stage's 16
default voices, 12 of them heard in training and the 4 held-out ones, so the evaluation can show how the
models do for voices they never heard. At the end ``output/demo/summary.json`` names the trained models,
the report, the time of every stage and every metric.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2i.cli import run_cli
from s2i.config import ConfigError, option, parse_config, require
from s2i.files import write_json_atomic

REPO = Path(__file__).resolve().parent
# Held out of training: a Caribbean and a New York accent, a Scottish female variant and the Klatt
# synthesiser (a different way of making speech altogether). They never speak a training caption.
HELD_OUT_VOICES = "en-029,en-us-nyc+m2,en-gb-scotland+f5,en+klatt"
# Training voices: the other twelve default voices plus 22 more espeak variants (none of them Klatt, and no
# Caribbean or New York accent), for more speakers to learn from (README: held-out Recall@1 with each pool).
TRAIN_VOICES = ",".join((
    "en-us", "en-us+f3", "en-us+m3", "en-us+f2", "en-gb", "en+f4", "en+m4", "en-gb-scotland", "en-gb-x-rp",
    "en-gb-x-rp+m7", "en-gb-x-gbclan", "en-gb-x-gbcwmd+f1",
    "en-us+m1", "en-us+f1", "en-us+m5", "en+m2", "en+f2", "en-gb-x-rp+f3", "en-gb-scotland+m3",
    "en-gb-x-gbclan+f4", "en-us+Andy", "en+Annie", "en-us+belinda", "en+boris", "en-us+david", "en+linda",
    "en-us+max", "en+norbert", "en-us+grandma", "en+grandpa", "en-us+croak", "en+aunty", "en-us+edward",
    "en+iven",
))


@dataclass(frozen=True)
class Stage:
    name: str
    what: str
    argv: list[str]
    outputs: list[str]  # files that must exist for the stage to count as done (relative to the repo)


@dataclass
class DemoConfig:
    out: str = option("output/demo", "folder of the demo's runs, stage records and summary.json")
    data_root: str = option("data/shapes", "the shapes dataset folder")
    held_out_voices: str = option(HELD_OUT_VOICES, "espeak voices that speak test captions only")
    train_voices: str = option(TRAIN_VOICES, "espeak voices that speak the training captions (the held-out "
                               "voices are taken out of them)")
    tts_workers: int = option(0, "parallel espeak processes (0 = one per CPU)")
    encoder_config: str = option("Audio_to_Image/cfg/shapes.yml", "speech-encoder preset")
    generator_config: str = option("StackGAN/cfg/shapes_demo.yml", "generator preset")
    audio_switch: str = option("demo", "tag of the demo's speech-embedding pickles")
    fid_max_images: int = option(256, "generated images scored by FID and IS (0 = all)")
    force: bool = option(False, "run every stage again (earlier run folders are kept, renamed)")
    from_stage: str | None = option(None, "run this stage and every later one again", flags=("--from",))
    until: str | None = option(None, "stop after this stage")
    list: bool = option(False, "list the stages and exit")
    device: str = option("auto", "auto = cuda when available, else cpu", choices=("auto", "cpu", "cuda"))
    seed: int | None = option(None, "--seed of the encoder training, the generator training and the drawing "
                              "(None = each preset's; another seed shows the run-to-run noise)")

    def __post_init__(self) -> None:
        require([(self.tts_workers >= 0, "--tts_workers must be >= 0"),
                  (self.fid_max_images >= 0, "--fid_max_images must be >= 0"),
                  (self.seed is None or self.seed >= 0, "--seed must be >= 0")])


def _training_voices(cfg: DemoConfig) -> str:
    """--train_voices without the --held_out_voices (which may or may not be among them)."""
    held = {v.strip() for v in cfg.held_out_voices.split(",")}
    voices = [v.strip() for v in cfg.train_voices.split(",") if v.strip() and v.strip() not in held]
    if not voices:
        raise ConfigError("--train_voices holds no voice that is not also in --held_out_voices")
    return ",".join(voices)


def stages(cfg: DemoConfig) -> list[Stage]:
    py = sys.executable
    out, data = Path(cfg.out), Path(cfg.data_root)
    enc = out / "speech_encoder"
    gan = (REPO / out / "generator").resolve()
    gan_rel = out / "generator"
    workers = str(cfg.tts_workers or os.cpu_count() or 1)
    dev = ["--device", cfg.device]
    seed = [] if cfg.seed is None else ["--seed", str(cfg.seed)]
    return [
        Stage("dataset", "draw the images and write the captions",
              [py, "prepare_shapes_dataset.py", "--out", str(data)],
              [str(data / "train.json"), str(data / "test.json")]),
        Stage("speech_train", "speak the training captions (held-out voices excluded)",
              [py, "Audio_to_Image/text_to_speech.py", "--dataset", "shapes", "--data_root", str(data),
               "--splits", "train", "--voices", _training_voices(cfg), "--respeak_changed", "--workers", workers],
              [str(data / "train.json")]),
        Stage("speech_test", "speak the test captions (every voice)",
              [py, "Audio_to_Image/text_to_speech.py", "--dataset", "shapes", "--data_root", str(data),
               "--splits", "test", "--respeak_changed", "--workers", workers],
              [str(data / "test.json")]),
        Stage("image_features", "teacher features (EfficientNet-Lite0, 10 views per image)",
              [py, "prepare_image_features.py", "--dataset", "shapes", "--data_root", str(data), *dev],
              [str(data / "train" / "image_features_efficientnet_lite0.pickle")]),
        Stage("attribute_classifier", "the judge: colour and shape classifier on real images",
              [py, "prepare_attribute_classifier.py", "--data_root", str(data), *dev],
              [str(data / "attribute_classifier.pth")]),
        Stage("speech_encoder", "train the speech encoder against the teacher",
              [py, "Audio_to_Image/train_audio_encoder.py", "--config", cfg.encoder_config, "--data_root", str(data),
               "--output_dir", str(enc), *seed, *dev],
              [str(enc / "best.pth")]),
        Stage("embeddings", "speech embeddings of every caption",
              [py, "Audio_to_Image/extract_audio_feature.py", "--dataset", "shapes", "--data_root", str(data),
               "--model", str(enc / "best.pth"), "--audio_switch", cfg.audio_switch, *dev],
              [str(data / "test" / f"audio_features_{cfg.audio_switch}.pickle")]),
        Stage("generator", "train the generator on the speech embeddings",
              [py, "StackGAN/main.py", "--cfg", cfg.generator_config, "--data_dir", str(data),
               "--audio_switch", cfg.audio_switch, "--output_dir", str(gan), *seed, *dev],
              [str(gan_rel / "Model" / "latest.pth")]),
        Stage("generate", "draw one image per test caption",
              [py, "StackGAN/main.py", "--cfg", cfg.generator_config, "--data_dir", str(data),
               "--audio_switch", cfg.audio_switch, "--no-TRAIN.FLAG", "--eval_net_g",
               str(gan / "Model" / "latest.pth"), *seed, *dev],
              []),
        Stage("evaluate", "score the drawings and write report.html",
              [py, "evaluate.py", "--dataset", "shapes", "--data_root", str(data), "--images", "{images}",
               "--audio_switch", cfg.audio_switch, "--encoder_run", str(enc), "--run_dir", str(gan_rel),
               "--fid_max_images", str(cfg.fid_max_images), *dev],
              [str(gan_rel / "report.html")]),
    ]


def _eval_folder(gan: Path) -> Path:
    """The newest ``iteration<N>`` folder StackGAN's evaluation wrote under ``<gan>/Model``."""
    found = sorted((gan / "Model").glob("iteration*"), key=lambda p: int(p.name[9:]) if p.name[9:].isdigit() else -1)
    if not found:
        raise ConfigError(f"no {gan / 'Model'}/iteration<N> folder: the generate stage wrote nothing")
    return found[-1]


def _keep(path: Path) -> None:
    """Renames an earlier run folder out of the way (nothing already written is lost)."""
    if path.exists():
        stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(path.stat().st_mtime))
        dest = path.with_name(f"{path.name}.old_{stamp}")
        n = 1
        while dest.exists():
            dest = path.with_name(f"{path.name}.old_{stamp}_{n}")
            n += 1
        path.rename(dest)
        print(f"  kept the earlier {path} as {dest}")


def _record_path(cfg: DemoConfig, stage: Stage) -> Path:
    return Path(cfg.out) / "stages" / f"{stage.name}.json"


def _is_done(cfg: DemoConfig, stage: Stage, argv: list[str]) -> bool:
    rec = _record_path(cfg, stage)
    if not rec.is_file():
        return False
    try:
        old = json.loads(rec.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return old.get("argv") == argv[1:] and all(Path(p).exists() for p in stage.outputs)


def _run_stage(argv: list[str]) -> tuple[int, float]:
    """Runs one stage's command from the repository root; returns its exit status and its peak memory
    (MiB): the largest resident set of the stage's process and of the processes it waited for. Linux
    counts the memory of the process that starts a stage into that peak, so it is never below this
    process's own (about 21 MiB here)."""
    with subprocess.Popen(argv, cwd=REPO) as proc:
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, round(usage.ru_maxrss / 1024, 1)  # Linux reports KiB


def run(cfg: DemoConfig) -> dict[str, Any]:
    all_stages = stages(cfg)
    names = [s.name for s in all_stages]
    for flag, value in (("--from", cfg.from_stage), ("--until", cfg.until)):
        if value is not None and value not in names:
            raise ConfigError(f"{flag} {value!r} is not a stage; the stages are {', '.join(names)}")
    if cfg.list:
        for s in all_stages:
            print(f"{s.name:22s} {s.what}")
        return {"stages": names}
    out = Path(cfg.out)
    gan = out / "generator"
    start = names.index(cfg.from_stage) if cfg.from_stage else (0 if cfg.force else None)
    last = names.index(cfg.until) if cfg.until else len(names) - 1
    seconds: dict[str, float] = {}
    peak_mib: dict[str, float | None] = {}
    rerun_upstream = False
    t_all = time.time()
    for i, stage in enumerate(all_stages[: last + 1]):
        argv = [a.replace("{images}", str(_eval_folder(gan))) if a == "{images}" else a for a in stage.argv]
        forced = start is not None and i >= start
        if not forced and not rerun_upstream and _is_done(cfg, stage, argv):
            rec = json.loads(_record_path(cfg, stage).read_text(encoding="utf-8"))
            seconds[stage.name] = rec["seconds"]
            peak_mib[stage.name] = rec.get("peak_rss_mib")
            print(f"[{i + 1}/{len(names)}] {stage.name}: done earlier ({rec['seconds']:.0f}s), reused")
            continue
        rerun_upstream = True
        if stage.name == "speech_encoder":
            _keep(out / "speech_encoder")
        if stage.name == "generator":
            _keep(gan)
        print(f"\n[{i + 1}/{len(names)}] {stage.name}: {stage.what}\n$ {shlex.join(argv[:1] and ['python', *argv[1:]])}",
              flush=True)
        t0 = time.time()
        returncode, peak_mib[stage.name] = _run_stage(argv)
        seconds[stage.name] = round(time.time() - t0, 1)
        if returncode != 0:
            raise ConfigError(f"stage {stage.name} failed (exit status {returncode}) after "
                              f"{seconds[stage.name]:.0f}s; fix the error above and run the demo again "
                              f"(finished stages are reused)")
        _record_path(cfg, stage).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(_record_path(cfg, stage), {"argv": argv[1:], "seconds": seconds[stage.name],
                                                     "peak_rss_mib": peak_mib[stage.name],
                                                     "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1)
        print(f"[{i + 1}/{len(names)}] {stage.name}: {seconds[stage.name]:.0f}s, peak memory "
              f"{peak_mib[stage.name]:.0f} MiB", flush=True)
    if last < len(names) - 1:
        print(f"stopped after {cfg.until}, as asked")
        return {"stage_seconds": seconds, "stage_peak_rss_mib": peak_mib}
    images = _eval_folder(gan)
    metrics = json.loads((images / "metrics.json").read_text(encoding="utf-8"))
    summary = {
        "speech_encoder_checkpoint": str(out / "speech_encoder" / "best.pth"),
        "generator_checkpoint": str(gan / "Model" / "latest.pth"),
        "report": str(gan / "report.html"),
        "generated_images": str(images),
        "held_out_voices": cfg.held_out_voices.split(","),
        "stage_seconds": seconds,
        "stage_peak_rss_mib": peak_mib,
        "total_seconds_this_run": round(time.time() - t_all, 1),
        "metrics": metrics,
    }
    write_json_atomic(out / "summary.json", summary, indent=1)
    _print_summary(summary, out / "summary.json")
    return summary


def _print_summary(s: dict[str, Any], path: Path) -> None:
    m = s["metrics"]
    print("\n=== demo finished ===")
    for name, sec in s["stage_seconds"].items():
        mib = s["stage_peak_rss_mib"].get(name)
        print(f"  {name:22s} {sec:7.1f}s" + (f"  {mib:6.0f} MiB peak" if mib is not None else ""))
    enc = m.get("speech_encoder", {})
    for group, vals in enc.items():
        print(f"  speech→image R@1 ({group}): {vals['s2i_R1']:.3f}")
    for group, vals in m.get("attributes", {}).items():
        print(f"  attributes, {group}: colour {vals['colour_accuracy']:.3f} shape {vals['shape_accuracy']:.3f} "
              f"both {vals['both_accuracy']:.3f} (n={vals['n']})")
    if "fid" in m:
        print(f"  FID {m['fid']['FID']:.1f}")
    if "inception_score" in m:
        print(f"  {m['inception_score']['name']}: {m['inception_score']['mean']:.2f}")
    print(f"speech encoder:  {s['speech_encoder_checkpoint']}")
    print(f"generator:       {s['generator_checkpoint']}")
    print(f"report:          {s['report']}")
    print(f"summary:         {path}")
    print(f"try it:          python speech_to_image.py --encoder {s['speech_encoder_checkpoint']} "
          f"--generator {s['generator_checkpoint']} --wav YOUR.wav --out output/mine")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg, _ = parse_config(DemoConfig, argv, __doc__.splitlines()[0])
    return run(cfg)


if __name__ == "__main__":
    run_cli(main)

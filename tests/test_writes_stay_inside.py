"""Safety: a stage writes only inside its run folder and data/ (or paths the user names)."""

from pathlib import Path

from Audio_to_Image import train_audio_encoder
from StackGAN import main as gan_main
from tests.conftest import gan_args, train_args


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _snapshot_repo() -> dict[str, float]:
    repo = Path(__file__).resolve().parents[1]
    return {str(p): p.stat().st_mtime for p in repo.rglob("*")
            if p.is_file() and ".venv" not in p.parts and ".git" not in p.parts and "__pycache__" not in p.parts
            and ".pytest_cache" not in p.parts}


def test_encoder_training_writes_only_its_run_folder_and_the_data_cache(toy_dataset, tmp_path, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    data_before = _files(toy_dataset)
    repo_before = _snapshot_repo()
    out = tmp_path / "named_run"
    train_audio_encoder.main(train_args(toy_dataset, out, "--epoch", "1"))
    assert not any(work.iterdir()), sorted(work.rglob("*"))  # nothing in the working directory
    new_data = _files(toy_dataset) - data_before
    assert all("feature_cache" in p.relative_to(toy_dataset).parts for p in new_data)
    assert (out / "latest.pth").is_file()
    assert _snapshot_repo() == repo_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "named_run"]


def test_gan_training_and_generation_write_only_the_run_folder(tiny_gan_data, tmp_path, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    data_before = {p: p.stat().st_mtime for p in _files(tiny_gan_data)}
    repo_before = _snapshot_repo()
    out = tmp_path / "named_run"
    gan_main.main(gan_args(tiny_gan_data, out, "--max_steps", "2", "--TRAIN.SNAPSHOT_INTERVAL", "2"))
    gan_main.main(gan_args(tiny_gan_data, out, "--no-TRAIN.FLAG", "--eval_net_g", str(out / "Model" / "latest.pth")))
    assert not any(work.iterdir()), sorted(work.rglob("*"))
    assert {p: p.stat().st_mtime for p in _files(tiny_gan_data)} == data_before  # the dataset is read only
    assert _snapshot_repo() == repo_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "named_run"]
    assert all(out in p.parents for p in _files(out)) and (out / "Model" / "iteration2").is_dir()

"""Run trackers: TensorBoard resumes without duplicate steps and records hparams; W&B is an
opt-in sink that logs offline, resumes the same run and writes only inside the run."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from pathlib import Path

import pytest
from tests.test_train_loop import Crash, crash_at, make_job

from scalelab.cli import main
from scalelab.errors import UserError
from scalelab.train.config import RuntimeConfig
from scalelab.train.metrics_log import WANDB_ID_FILE, MetricsLog, flat_scalars
from scalelab.train.trainer import Trainer
from scalelab.utils.io import read_json, read_jsonl

FORK = multiprocessing.get_context("fork")


def _runtime(**kw) -> RuntimeConfig:
    base = {"precision": "fp32", "progress": False, "log_every": 1, "tensorboard": False}
    return RuntimeConfig(**{**base, **kw})


def _train_steps(run: Path) -> list[int]:
    return [r["step"] for r in read_jsonl(run / "metrics.jsonl") if r["type"] == "train"]


# ----------------------------------------------------------------------------- TensorBoard


def _killed_child(run_dir: str, at: int) -> None:
    """Train until step ``at``, get the events to disk, then die by SIGKILL."""
    holder: dict[str, Trainer] = {}

    def hook(step: int) -> None:
        if step == at:
            holder["trainer"].log.flush()  # what a long run has on disk when it is killed
            os.kill(os.getpid(), signal.SIGKILL)

    trainer = Trainer(make_job(Path(run_dir), runtime=_runtime(tensorboard=True), on_step_end=hook))
    holder["trainer"] = trainer
    trainer.fit()
    os._exit(0)  # not reached


def _kill_at(run: Path, at: int) -> None:
    proc = FORK.Process(target=_killed_child, args=(str(run), at))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL


def _accumulator(path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_resume_after_sigkill_has_each_step_once(tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    _kill_at(run, 12)  # checkpoints every 5 steps: resumes at 10, steps 11-12 are replayed
    (first,) = (run / "tensorboard").glob("events.out.tfevents.*")
    killed = [e.step for e in _accumulator(first).Scalars("train/loss")]
    assert killed == list(range(1, 13))  # the killed session's events reached the disk
    summary = Trainer(make_job(run, runtime=_runtime(tensorboard=True))).fit()
    assert summary["status"] == "completed"
    acc = _accumulator(run / "tensorboard")
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 31))  # each step once, in order
    jsonl = [r["loss"] for r in read_jsonl(run / "metrics.jsonl") if r["type"] == "train"]
    assert [e.value for e in loss] == pytest.approx(jsonl, rel=1e-6)
    assert [e.step for e in acc.Scalars("eval/val_loss")] == [10, 20, 30]
    # The completed run's hyperparameters and final metrics, for the HPARAMS tab.
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["optim.lr"].number_value == pytest.approx(1e-2)
    assert start.hparams["runtime.precision"].string_value == "fp32"
    (final,) = acc.Scalars("hparams/val_loss")
    assert final.step == 30 and final.value == pytest.approx(summary["last_eval"]["val_loss"])
    # Running the finished run again logs nothing more anywhere.
    files = sorted((run / "tensorboard").glob("events.*"))
    Trainer(make_job(run, runtime=_runtime(tensorboard=True))).fit()
    assert sorted((run / "tensorboard").glob("events.*")) == files


def test_a_restart_before_the_first_checkpoint_starts_the_log_afresh(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Crash):
        Trainer(make_job(run, runtime=_runtime(), on_step_end=crash_at(3))).fit()
    assert _train_steps(run) == [1, 2, 3]  # no checkpoint yet (every 5 steps)
    Trainer(make_job(run, runtime=_runtime())).fit()
    assert _train_steps(run) == list(range(1, 31))


def test_flat_scalars_of_a_nested_config():
    config = {"optim": {"lr": 0.1, "eps": None}, "sources": ["a", "b"], "x": True, "d": {}}
    assert flat_scalars(config) == {"optim.lr": 0.1, "sources": "a,b", "x": True}


# ----------------------------------------------------------------------------- W&B


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "WANDB_DIR", "WANDB_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    yield wandb
    wandb.teardown()  # stop the W&B service this test started
    assert not any(home.iterdir()), sorted(str(p) for p in home.rglob("*"))


def _offline_runs(root: Path, run_id: str) -> list[Path]:
    return sorted(root.glob(f"offline-run-*-{run_id}"))


def test_wandb_logs_offline_inside_the_run_and_resumes_the_same_run(tmp_path, offline_wandb):
    run = tmp_path / "my-rung"
    runtime = _runtime(wandb=True, wandb_project="ladder", wandb_group="study1")
    with pytest.raises(Crash):
        Trainer(make_job(run, runtime=runtime, on_step_end=crash_at(12))).fit()
    stored = read_json(run / WANDB_ID_FILE)
    assert stored["project"] == "ladder" and stored["name"] == "my-rung"
    Trainer(make_job(run, runtime=runtime)).fit()
    offline_wandb.teardown()  # the W&B service writes its files asynchronously: wait for it
    assert read_json(run / WANDB_ID_FILE)["id"] == stored["id"]
    # One W&B run id for both sessions (W&B names offline session directories by the
    # second they started, so two quick sessions may share one).
    sessions = sorted((run / "wandb").glob("offline-run-*"))
    assert sessions and sessions == _offline_runs(run / "wandb", stored["id"])
    data = b"".join((s / f"run-{stored['id']}.wandb").read_bytes() for s in sessions)
    for key in (b"train/loss", b"train/grad_norm", b"eval/val_loss", b"optim", b"my-rung"):
        assert key in data, key
    assert b"final_val_loss" in data  # the summary, written when the run completed
    assert b"study1" in data and b"ladder" in data  # group and project


def test_wandb_dir_from_the_environment_and_a_missing_package(tmp_path, offline_wandb, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    run = tmp_path / "run"
    Trainer(make_job(run, steps=10, runtime=_runtime(wandb=True, wandb_name="named"))).fit()
    offline_wandb.teardown()  # flushes the service's files
    run_id = read_json(run / WANDB_ID_FILE)["id"]
    (session,) = _offline_runs(tmp_path / "elsewhere" / "wandb", run_id)
    data = (session / f"run-{run_id}.wandb").read_bytes()
    assert b"train/loss" in data and b"named" in data
    assert not (run / "wandb").exists()
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(
        UserError, match=r"needs the wandb package: pip install 'scalelab\[wandb\]'"
    ):
        MetricsLog(tmp_path / "x", runtime=_runtime(wandb=True))
    with pytest.raises(UserError, match="wandb_project must not be empty"):
        _runtime(wandb=True, wandb_project=" ")


def test_study_rungs_log_to_wandb_grouped_by_study(tmp_path, tiny_bpe_dataset, monkeypatch):
    """A study planned with W&B on names each rung's W&B run by its id (the run directory's
    name), grouped by the study; without W&B nothing is added."""
    from scalelab.study.run import RunConfig, run_study
    from scalelab.study.study import Study
    from scalelab.train.pretrain import PretrainConfig

    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name, extra in (("my-study", ["--base.runtime.wandb"]), ("plain", [])):
        argv = ["plan", "--design", "grid", "--sizes", "3e3", "--tokens", "2048", "--holdout", "0",
                "--min-tokens", "1024", "--base.dataset", str(tiny_bpe_dataset), "--out",
                str(tmp_path / name), *extra]  # fmt: skip
        assert main(argv) == 0
        study = Study.load(tmp_path / name)
        run_study(study, RunConfig(in_process=True, progress=False))
        rung = study.rungs[0]
        runtime = PretrainConfig.load(study.rung_dir(rung) / "rung.yaml").runtime
        assert runtime.wandb_group == ("my-study" if extra else "")
        assert (study.rung_dir(rung) / "wandb").is_dir() == bool(extra)

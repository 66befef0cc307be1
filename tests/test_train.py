"""The shared trainer end to end on the real diabetes data (ships with scikit-learn)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from gal.adjuster import GradientAdjuster
from gal.benchmarking import BenchTask, random_batches, trainer_arm
from gal.checkpoint import load_checkpoint
from gal.cli import run
from gal.device_check import step_host_syncs
from gal.errors import ConfigError
from gal.optim import build_optimizer
from gal.precision import Precision
from gal.results import keep_best
from gal.runlog import NonFiniteLossError
from gal.tasks.regression import RegressionTask
from gal.train import train
from gal.trainee import Trainee, configure_backends

FAST = ["task=diabetes", "trainer.epochs=2", "trainer.progress=false", "trainer.log_every=5"]


def _run_dir(cfg) -> Path:
    return Path(cfg.run_dir)


@pytest.mark.parametrize("gal", ["off", "on"])
def test_run_writes_metrics_config_and_logs(make_config, gal):
    cfg = make_config(*FAST, f"gal={gal}", "seed=3")
    metrics = train(cfg)
    run_dir = _run_dir(cfg)
    assert run_dir.parts[-6:] == ("runs", "default", "diabetes", "adam", gal, "seed=3")
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["metrics"] == metrics and set(metrics) == {"mae", "mse", "r2"}
    assert summary["config"]["gal"]["enabled"] == (gal == "on")
    environment = summary["environment"]  # where the numbers came from
    assert environment["cpu"] and environment["gpu"] is None and environment["processes"] == 1
    assert environment["threads"] == torch.get_num_threads() and environment["libraries"]["torch"] == torch.__version__
    assert (run_dir / "config.yaml").exists()
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, summary["steps"] + 1))
    assert sum("eval/mae" in r for r in rows) == 2
    if gal == "on":
        assert {"remainder", "cosine", "adjusted_fraction", "tentative_loss"} <= set(steps[0])
        assert summary["gal_weights"] == 1 * 256 + 256 * 64 + 64 * 32 + 32 * 1


def test_metrics_json_keeps_the_last_and_the_best_evaluation(make_config):
    """ "best" is the evaluation with the task's best objective (diabetes: lowest test MSE), with its epoch."""
    cfg = make_config(*FAST, "trainer.epochs=6", "optimizer.lr=0.03")  # a large lr: the test MSE goes up and down
    metrics = train(cfg)
    summary = json.loads((_run_dir(cfg) / "metrics.json").read_text())
    evaluations = [
        r for r in map(json.loads, (_run_dir(cfg) / "log.jsonl").read_text().splitlines()) if "eval/mse" in r
    ]
    lowest = min(evaluations, key=lambda r: r["eval/mse"])
    assert summary["metrics"] == metrics == {k.removeprefix("eval/"): v for k, v in evaluations[-1].items()
                                             if k.startswith("eval/")}  # fmt: skip
    assert summary["best"]["metric"] == "mse" and summary["best"]["epoch"] == lowest["epoch"]
    assert summary["best"]["metrics"] == {
        k.removeprefix("eval/"): v for k, v in lowest.items() if k.startswith("eval/")
    }
    assert lowest["epoch"] != evaluations[-1]["epoch"]  # this run's best is not its last: the two differ


def test_keep_best_follows_the_direction_and_never_prefers_nan():
    best = keep_best(None, {"AP": 30.0}, 0, ("AP", "maximize"))
    best = keep_best(best, {"AP": 35.0}, 1, ("AP", "maximize"))
    best = keep_best(best, {"AP": float("nan")}, 2, ("AP", "maximize"))
    assert keep_best(best, {"AP": 35.0}, 3, ("AP", "maximize"))["epoch"] == 1  # a tie keeps the earlier epoch
    assert keep_best(None, {"mse": float("nan")}, 0, ("mse", "minimize"))["epoch"] == 0
    assert keep_best(keep_best(None, {"mse": float("nan")}, 0, ("mse", "minimize")), {"mse": 9.0}, 1,
                     ("mse", "minimize"))["epoch"] == 1  # fmt: skip
    assert keep_best(best, {"AP": 20.0}, 4, ("AP", "maximize")) == {"metric": "AP", "epoch": 1, "metrics": {"AP": 35.0}}


def test_both_arms_start_from_the_same_model(make_config):
    # With zero epochs the evaluated model is the initial one: equal metrics mean equal weights.
    initial = {gal: train(make_config(*FAST, f"gal={gal}", "trainer.epochs=0")) for gal in ("off", "on")}
    assert initial["off"] == initial["on"]
    trained = {gal: train(make_config(*FAST, f"gal={gal}", "name=trained")) for gal in ("off", "on")}
    assert trained["off"] != trained["on"]


def test_existing_run_is_never_overwritten(make_config):
    cfg = make_config(*FAST)
    train(cfg)
    metrics_file = _run_dir(cfg) / "metrics.json"
    before = metrics_file.read_bytes()
    with pytest.raises(FileExistsError, match="if_exists=skip"):
        train(make_config(*FAST))
    assert train(make_config(*FAST, "trainer.if_exists=skip")) == json.loads(before)["metrics"]
    assert metrics_file.read_bytes() == before


@pytest.mark.parametrize("gal", ["off", "on"])
def test_resume_matches_an_uninterrupted_run(tmp_path, make_config, gal):
    uninterrupted = train(make_config(*FAST, f"gal={gal}", "trainer.epochs=4", "name=straight"))
    train(make_config(*FAST, f"gal={gal}", "trainer.epochs=2", "name=resumed"))
    resumed_cfg = make_config(*FAST, f"gal={gal}", "trainer.epochs=4", "name=resumed", "trainer.if_exists=resume")
    assert train(resumed_cfg) == uninterrupted
    best = [
        json.loads((results / "metrics.json").read_text())["best"]
        for results in (
            _run_dir(make_config(*FAST, f"gal={gal}", "trainer.epochs=4", "name=straight")),
            _run_dir(resumed_cfg),
        )
    ]
    assert best[0] == best[1]  # the best of the first two epochs came back from the checkpoint
    state = load_checkpoint(_run_dir(resumed_cfg) / "last.pt")  # weights_only=True
    assert (
        state["epoch"] == 4
        and state["step"] == json.loads((_run_dir(resumed_cfg) / "metrics.json").read_text())["steps"]
    )


def test_oscillation_index_is_logged_and_survives_a_resume(make_config):
    extra = ["optimizer=adarem", "optimizer.lr=0.01", "trainer.oscillation=true"]
    uninterrupted = train(make_config(*FAST, *extra, "trainer.epochs=4", "name=straight"))
    assert uninterrupted["oscillation_q"] >= 1.0  # a path is never shorter than its displacement
    train(make_config(*FAST, *extra, "trainer.epochs=2", "name=resumed"))
    assert (
        train(make_config(*FAST, *extra, "trainer.epochs=4", "name=resumed", "trainer.if_exists=resume"))
        == uninterrupted
    )


def test_a_gal_run_with_random_adjustments_resumes(make_config):
    # h-less adjusters have an empty state; the checkpoint must still count them as present
    extra = ["gal=on", "gal.kind=uniform"]
    uninterrupted = train(make_config(*FAST, *extra, "trainer.epochs=4", "name=straight"))
    train(make_config(*FAST, *extra, "trainer.epochs=2", "name=resumed"))
    assert (
        train(make_config(*FAST, *extra, "trainer.epochs=4", "name=resumed", "trainer.if_exists=resume"))
        == uninterrupted
    )


def test_resuming_with_a_part_the_checkpoint_lacks_is_a_clear_error(make_config):
    train(make_config(*FAST, "trainer.epochs=2", "name=resumed"))
    with pytest.raises(ValueError, match=r"another config \(trainer.oscillation: False -> True\)"):
        train(
            make_config(
                *FAST, "trainer.epochs=4", "name=resumed", "trainer.if_exists=resume", "trainer.oscillation=true"
            )
        )


def targets_turn_nan(monkeypatch, from_step: int) -> None:
    """Diabetes whose targets become NaN from training step ``from_step`` on (the data, not the config)."""
    steps, features_and_loss = iter(range(1, 10**9)), RegressionTask.features_and_loss

    def nan_targets(self, model, batch):
        x, y = batch
        return features_and_loss(self, model, (x, y * float("nan") if next(steps) >= from_step else y))

    monkeypatch.setattr(RegressionTask, "features_and_loss", nan_targets)


@pytest.mark.parametrize("gal", ["off", "on"])
def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(make_config, monkeypatch, gal):
    # diabetes has 12 steps per epoch: step 30 is in epoch 3 (counted from 1), after two good checkpoints
    cfg = make_config(*FAST, f"gal={gal}", "trainer.epochs=4", "trainer.log_every=4")
    targets_turn_nan(monkeypatch, 30)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 30 \(epoch 3\)"):
        train(cfg)
    state = load_checkpoint(_run_dir(cfg) / "last.pt")
    assert state["epoch"] == 2 and state["step"] == 24
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert not (_run_dir(cfg) / "metrics.json").exists()


def test_a_recorded_divergence_finishes_the_run_as_diverged(make_config, monkeypatch):
    cfg = make_config(*FAST, "trainer.epochs=4", "trainer.on_nonfinite=record")
    targets_turn_nan(monkeypatch, 30)
    assert train(cfg) == {}
    summary = json.loads((_run_dir(cfg) / "metrics.json").read_text())
    assert summary["metrics"] == {} and "loss is nan at step 30" in summary["diverged"]
    cfg.trainer.if_exists = "skip"
    assert train(cfg) == {}  # a sweep re-run skips it like any finished run


def test_resume_after_a_crash_logs_each_step_once(make_config, monkeypatch):
    cfg = make_config(*FAST, "gal=on", "trainer.epochs=4", "trainer.log_every=4")
    with monkeypatch.context() as patch:  # the data turn NaN (not the config: the run is resumed under its own)
        targets_turn_nan(patch, 30)
        with pytest.raises(NonFiniteLossError):
            train(cfg)  # logged steps 1-28 and epochs 1-2, checkpoint after step 24
    summary = train(make_config(*FAST, "gal=on", "trainer.epochs=4", "trainer.if_exists=resume"))
    rows = [json.loads(line) for line in (_run_dir(cfg) / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 49))
    assert [r["epoch"] for r in rows if "eval/mae" in r] == [1, 2, 3, 4]  # epochs count from 1
    assert summary["mae"] == rows[-1]["eval/mae"]


def test_bad_gal_settings_fail_before_training(make_config):
    with pytest.raises(ValueError, match="alpha must lie in"):
        train(make_config(*FAST, "gal=on", "gal.alpha=1.5"))
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'"):
        train(make_config(*FAST, "optimizer.name=adamm"))
    assert not any((Path(make_config(*FAST).results_dir)).rglob("metrics.json"))


def test_command_line_multirun_writes_one_directory_per_seed(tmp_path):
    command = [
        sys.executable, "-m", "gal", "--multirun", "task=diabetes", "gal=off,on", "seed=0,1",
        "trainer.epochs=1", "trainer.progress=false", f"results_dir={tmp_path}",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, cwd=tmp_path)
    found = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("metrics.json"))
    assert found == [f"runs/default/diabetes/adam/{g}/seed={s}/metrics.json" for g in ("off", "on") for s in (0, 1)]


@pytest.mark.parametrize(
    ("override", "message"),
    [  # each is a 12 s start of the command line: one in the fast suite (Hydra's errors, both)
        pytest.param("task=cifar1000", "Could not find 'task/cifar1000'", marks=pytest.mark.slow),
        ("trainer.epoch=3", "trainer.epoch"),
    ],
)
def test_command_line_rejects_unknown_names_and_keys(tmp_path, override, message):
    command = [sys.executable, "-m", "gal", override, f"results_dir={tmp_path}"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0 and message in result.stderr


def test_a_setting_to_fix_is_one_line_on_the_command_line_before_training(tmp_path):
    command = [sys.executable, "-m", "gal", "task=diabetes", "gal=on", "gal.alpha=2", f"results_dir={tmp_path}"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr == "error: gal.alpha must lie in [0, 1] (Eq. 4), got 2.0\n"
    assert not list(tmp_path.rglob("log.jsonl"))  # nothing trained


def test_a_setting_to_fix_is_said_by_the_first_rank_only_or_raised_with_hydra_full_error(make_config, monkeypatch):
    """Every process of a torchrun job meets the same error; only the first prints it."""
    cfg = make_config(*FAST, "task.global_batch_size=0")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit) as exit_info:
        run(cfg)
    assert exit_info.value.code == 1
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit, match="error: task.global_batch_size must be an integer >= 1; got 0"):
        run(cfg)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # Hydra's switch for the whole traceback
    with pytest.raises(ConfigError, match="task.global_batch_size must be an integer >= 1"):
        run(cfg)


def test_wandb_logger_writes_an_offline_run(make_config, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_config(*FAST, "gal=on", "logger=wandb")
    train(cfg)
    offline_runs = list((_run_dir(cfg) / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and list(offline_runs[0].glob("*.wandb"))
    assert (_run_dir(cfg) / "log.jsonl").exists()  # the JSONL log is written either way


def test_the_console_script_finds_the_configs_from_anywhere(tmp_path):
    gal_train = Path(sys.executable).with_name("gal-train")  # pyproject's [project.scripts], = python -m gal
    result = subprocess.run([str(gal_train), "--cfg", "job", "experiment=digits"], cwd=tmp_path, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert "name: digits" in result.stdout.decode()


def test_backend_choices_are_set_for_each_run_and_undone_by_the_next():
    cpu = torch.device("cpu")
    try:
        configure_backends(cpu, input_sizes_vary=False, tf32=False, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # cuBLAS reads it when its first handle is made
        configure_backends(cpu, input_sizes_vary=False, tf32=False, deterministic=False)  # the next run of a sweep
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-sync detection needs a CUDA device")
def test_the_trainer_step_syncs_only_to_read_its_logs_on_cuda():
    """train_one_epoch with GAL on, bf16: the only host syncs are the step logs' read at the epoch's end."""
    device = torch.device("cuda")
    model = timm.create_model("test_efficientnet", num_classes=10).to(device)
    adjuster = GradientAdjuster(10, arch=(16,)).to(device)
    optimizer = build_optimizer(model, adjuster, name="sgd", lr=0.01, momentum=0.9)
    trainee = Trainee(model, optimizer, adjuster, precision=Precision(device, "bf16"))
    arm = trainer_arm(trainee, BenchTask(num_classes=10), log_every=100)
    batches = random_batches(3, 4, device, False, 32, 10)
    arm(batches)  # warm-up: lazy CUDA initialisation may sync once
    record = step_host_syncs(arm, batches, device)
    assert record["unexpected"] == [] and {site.rsplit(":", 1)[0] for site in record["sites"]} == {"gal/runlog.py"}


def test_a_diverged_run_stops_with_one_line_and_no_traceback(tmp_path):
    command = [sys.executable, "-m", "gal", "task=diabetes", "optimizer.lr=1e30", "trainer.epochs=2"]
    result = subprocess.run([*command, f"results_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training loss is nan at step ") and "The run stops here;" in last
    assert not list(tmp_path.rglob("metrics.json"))


def test_epochs_count_from_1_on_the_console_the_progress_bar_and_in_every_file(tmp_path):
    command = [sys.executable, "-m", "gal", "task=diabetes", "trainer.epochs=3", "optimizer.lr=0.03"]
    result = subprocess.run([*command, f"results_dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "runs/default/diabetes/adam/off/seed=0"
    summary = json.loads((run_dir / "metrics.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    console = result.stdout + result.stderr
    assert [line.split(":")[0].rsplit("] ", 1)[-1] for line in console.splitlines() if "/3: mae" in line] == [
        "epoch 1/3", "epoch 2/3", "epoch 3/3"
    ]  # fmt: skip
    assert result.stdout.rstrip().endswith(f"at epoch {summary['best']['epoch']}")
    assert "epoch=3" in console and "epoch=0" not in console  # the bar's postfix beside its "3/3"
    assert summary["first_epoch"] == 1 and summary["selected"]["epoch"] == 3
    assert {row["epoch"] for row in rows if "loss" in row} == {1, 2, 3}
    assert [row["epoch"] for row in rows if "eval/mse" in row] == [1, 2, 3]
    best = min((row for row in rows if "eval/mse" in row), key=lambda row: row["eval/mse"])
    assert summary["best"]["epoch"] == best["epoch"]


def test_a_run_made_when_epochs_counted_from_0_resumes_and_reads_counted_from_1(make_config):
    """An older run's checkpoint and log.jsonl number epochs from 0 and have no "first_epoch": resumed, the log is
    renumbered and continued from 1, and the best epoch read from the checkpoint is counted from 1 too."""
    straight = train(make_config(*FAST, "trainer.epochs=4", "name=straight"))
    cfg = make_config(*FAST, "trainer.epochs=2", "name=old")
    train(cfg)
    run_dir, checkpoint = _run_dir(cfg), _run_dir(cfg) / "last.pt"
    state = load_checkpoint(checkpoint)
    del state["first_epoch"]
    state["best"]["epoch"] -= 1
    torch.save(state, checkpoint)
    old_rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    (run_dir / "log.jsonl").write_text("".join(json.dumps({**r, "epoch": r["epoch"] - 1}) + "\n" for r in old_rows))
    from gal.report.collect import log_rows

    assert log_rows(run_dir) == old_rows  # read as today's count
    assert train(make_config(*FAST, "trainer.epochs=4", "name=old", "trainer.if_exists=resume")) == straight
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows if "eval/mse" in row] == [1, 2, 3, 4]
    summaries = [
        json.loads((_run_dir(c) / "metrics.json").read_text())
        for c in (make_config(*FAST, "trainer.epochs=4", "name=straight"), cfg)
    ]
    assert summaries[0]["best"] == summaries[1]["best"]


def test_help_lists_the_users_config_groups_only(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gal", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = [line.split(":")[0] for line in groups.splitlines() if ": " in line and not line.startswith("Compose")]
    assert listed == ["ablation", "experiment", "gal", "hparams_search", "hydra/launcher", "logger", "optimizer",
                      "scheduler", "task", "trainer"]  # fmt: skip
    assert "gal: off, on" in groups and "schema" not in result.stdout


@pytest.mark.parametrize("arm", ["off", "on"])
def test_a_gal_value_out_of_range_is_refused_with_gal_on_or_off(tmp_path, arm):
    command = [sys.executable, "-m", "gal", "experiment=table5_diabetes", f"gal={arm}", "gal.alpha=2"]
    result = subprocess.run([*command, f"results_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: gal.alpha must lie in [0, 1] (Eq. 4), got 2.0"
    assert not list(tmp_path.rglob("*.json"))

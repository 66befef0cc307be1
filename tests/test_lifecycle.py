"""A run directory's life: if_exists=error|skip|resume, the config check, and one process at a time."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gal.errors import ConfigError, RunExistsError
from gal.lifecycle import LOCK_FILE, RunLock, RunLockedError, check_same_config
from gal.train import train

FAST = ["task=diabetes", "trainer.progress=false", "trainer.log_every=5"]


def files(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run directory, to check that a refused launch wrote nothing."""
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.name != LOCK_FILE}


@pytest.fixture
def unfinished(make_config):
    """A run stopped after epoch 2 of 4 (its metrics.json removed: as if killed), and the uninterrupted run."""
    uninterrupted = train(make_config(*FAST, "trainer.epochs=4", "name=straight"))
    cfg = make_config(*FAST, "trainer.epochs=2")
    train(cfg)
    (Path(cfg.run_dir) / "metrics.json").unlink()
    return Path(cfg.run_dir), uninterrupted


@pytest.mark.parametrize("if_exists", ["skip", "resume"])
def test_skip_and_resume_continue_an_unfinished_run_to_where_the_uninterrupted_one_ends(
    make_config, unfinished, if_exists
):
    run_dir, uninterrupted = unfinished
    assert train(make_config(*FAST, "trainer.epochs=4", f"trainer.if_exists={if_exists}")) == uninterrupted
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 4


def test_error_refuses_an_unfinished_run_and_never_starts_it_again_over_its_checkpoint(make_config, unfinished):
    run_dir, _ = unfinished
    before = files(run_dir)
    with pytest.raises(RunExistsError, match=r"unfinished run \(last.pt after epoch 2\).*trainer.if_exists=resume"):
        train(make_config(*FAST, "trainer.epochs=4"))
    assert files(run_dir) == before


@pytest.mark.parametrize("if_exists", ["skip", "resume"])
def test_a_finished_run_is_reused_as_it_is(make_config, if_exists):
    cfg = make_config(*FAST, "trainer.epochs=2")
    metrics = train(cfg)
    before = files(Path(cfg.run_dir))
    assert train(make_config(*FAST, "trainer.epochs=2", f"trainer.if_exists={if_exists}")) == metrics
    assert files(Path(cfg.run_dir)) == before  # not evaluated again, nothing rewritten


def test_more_epochs_extend_a_finished_run_and_fewer_are_refused(make_config):
    uninterrupted = train(make_config(*FAST, "trainer.epochs=4", "name=straight"))
    train(make_config(*FAST, "trainer.epochs=2"))
    assert train(make_config(*FAST, "trainer.epochs=4", "trainer.if_exists=skip")) == uninterrupted
    with pytest.raises(ConfigError, match=r"trained 4 epochs; this launch asks for 3.*another name= or seed="):
        train(make_config(*FAST, "trainer.epochs=3", "trainer.if_exists=skip"))


@pytest.mark.parametrize("finished", [True, False])
def test_another_config_is_refused_naming_the_keys_that_differ(make_config, unfinished, finished):
    run_dir, _ = unfinished
    if finished:
        train(make_config(*FAST, "trainer.epochs=2", "trainer.if_exists=resume"))  # nothing left: writes metrics
    before = files(run_dir)
    changed = ["optimizer.lr=0.1", "gal=off", "trainer.epochs=4", "trainer.if_exists=skip"]
    with pytest.raises(ConfigError, match=r"another config \(optimizer.lr: 0.001 -> 0.1\).*name= or seed="):
        train(make_config(*FAST, *changed))
    assert files(run_dir) == before
    # what may change on a restart may change: the logger's settings, progress, log_every, the device, what a
    # NaN loss does (a sweep made before its config recorded divergence goes on from its runs)
    restart = ["trainer.log_every=3", "trainer.device=cpu", "trainer.epochs=4", "trainer.if_exists=skip",
               "trainer.on_nonfinite=record"]  # fmt: skip
    train(make_config(*FAST[:2], *restart))


def test_an_evaluation_only_run_is_trained_for_real_when_asked(make_config):
    train(make_config(*FAST, "trainer.epochs=0"))  # metrics.json of the initial weights, no checkpoint
    trained = train(make_config(*FAST, "trainer.epochs=2", "trainer.if_exists=skip"))
    assert trained == train(make_config(*FAST, "trainer.epochs=2", "name=clean"))


def test_a_start_that_died_before_its_first_checkpoint_starts_again(make_config):
    cfg = make_config(*FAST, "trainer.epochs=2")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "log.jsonl").write_text('{"step": 1, "epoch": 0, "loss": 1.0}\n')  # no last.pt: nothing to keep
    assert train(cfg) == train(make_config(*FAST, "trainer.epochs=2", "name=clean"))


HOLDER = """
import sys, time
from gal.lifecycle import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_one_process_per_run_and_a_dead_holders_lock_is_taken_over(make_config, tmp_path):
    cfg = make_config(*FAST, "trainer.epochs=1")
    run_dir = Path(cfg.run_dir)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"in use by pid {holder.pid} on {socket.gethostname()}"):
            train(cfg)
        assert not (run_dir / "metrics.json").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    train(cfg)  # the kernel dropped the dead process's lock
    assert (run_dir / "metrics.json").exists()


def test_the_lock_is_released_after_a_run_and_reentrant_within_one(tmp_path):
    lock = RunLock(tmp_path / "run")
    with lock:
        lock.acquire()  # the same process asking again: already held
        with pytest.raises(RunLockedError):  # another open file description: as another process would
            RunLock(tmp_path / "run").acquire()
    with RunLock(tmp_path / "run"):
        pass
    assert (tmp_path / "run" / LOCK_FILE).read_text() == ""  # no stale owner left behind


def test_a_run_made_before_an_option_existed_compares_as_the_code_before_it(tmp_path):
    saved = {"gal": {"enabled": True, "alpha": 0.1}}  # a run from before gal.first_order and gal.ddp
    launch = {"gal": {"enabled": True, "alpha": 0.1, "first_order": "authors", "ddp": "global"}}
    check_same_config(tmp_path, saved, launch)
    launch["gal"]["ddp"] = "per_rank"
    with pytest.raises(ConfigError, match=r"gal.ddp: 'global' -> 'per_rank'"):
        check_same_config(tmp_path, saved, launch)
    # the group's presence, not one probe key, says the run predates the option
    check_same_config(tmp_path, {"gal": {"alpha": 0.1}}, {"gal": {"alpha": 0.1, "first_order": "authors"}})
    with pytest.raises(ConfigError, match=r"gal.first_order: '<absent>' -> 'authors'"):  # no gal group at all
        check_same_config(
            tmp_path, {"trainer": {"epochs": 1}}, {"trainer": {"epochs": 1}, "gal": {"first_order": "authors"}}
        )


def test_a_run_from_before_gal_at_is_the_logits_run_and_task_epochs_is_a_length(tmp_path):
    saved = {"gal": {"enabled": True, "alpha": 0.1}, "task": {"epochs": 30}, "trainer": {"epochs": None}}
    launch = {"gal": {"enabled": True, "alpha": 0.1, "at": "logits"}, "task": {}, "trainer": {"epochs": 30}}
    check_same_config(tmp_path, saved, launch)
    launch["gal"]["at"] = "pre_logits"
    with pytest.raises(ConfigError, match=r"gal.at: 'logits' -> 'pre_logits'"):
        check_same_config(tmp_path, saved, launch)

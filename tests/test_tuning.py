"""Equal-budget tuning (configs/hparams_search/tune_*.yaml, `make tuned`): both arms search with the same trials,
sampler seed and ranges, each trial scored on the validation split; a mismatch is refused before any trial."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from gal.errors import ConfigError
from gal.report.tuned import best_overrides
from gal.sweep import BUDGET_FILE, check_equal_budget

from .conftest import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["experiment=table5_diabetes", "trainer.progress=false", "trainer.epochs=1", "trainer.checkpoint=false"]


def gal(args: list[str], results_dir: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "gal", *args, f"results_dir={results_dir}"]
    return subprocess.run(command, cwd=results_dir, capture_output=True, text=True, timeout=300)


def sweeper(n_trials: int, seed: int = 0, **params: str):
    return OmegaConf.create({"n_trials": n_trials, "sampler": {"seed": seed}, "params": params})


def test_the_gal_arm_searches_the_baselines_space_plus_alpha_and_beta():
    baseline, gal_arm = (yaml.safe_load(Path(CONFIG_DIR, "hparams_search", f"tune_{arm}.yaml").read_text())
                         for arm in ("baseline", "gal"))  # fmt: skip
    assert gal_arm["defaults"][0] == "tune_baseline"
    assert set(gal_arm["hydra"]["sweeper"]["params"]) == {"gal.alpha", "gal.beta"}
    assert set(baseline["hydra"]["sweeper"]["params"]) == {
        "optimizer.lr", "optimizer.weight_decay", "task.global_batch_size", "trainer.epochs"
    }  # fmt: skip
    assert baseline["task"]["val_size"] > 0


def test_the_arms_must_share_trials_seed_and_ranges(tmp_path):
    off, on = tmp_path / "off", tmp_path / "on"
    off.mkdir()
    budget = check_equal_budget(off, "off", sweeper(30, **{"optimizer.lr": "interval(1, 2)"}), ["trainer.epochs=3"])
    assert budget == {"arm": "off", "n_trials": 30, "sampler_seed": 0, "params": {"optimizer.lr": "interval(1, 2)"}}
    (off / BUDGET_FILE).write_text(json.dumps(budget))
    same = sweeper(30, **{"optimizer.lr": "interval(1, 2)", "gal.alpha": "interval(0.1, 0.2)"})
    assert check_equal_budget(on, "on", same, [])["params"]["gal.alpha"] == "interval(0.1, 0.2)"
    for other, overrides, named in [
        (sweeper(31, **{"optimizer.lr": "interval(1, 2)"}), [], "n_trials 31 here, 30 in"),
        (sweeper(30, seed=1, **{"optimizer.lr": "interval(1, 2)"}), [], "sampler_seed 1 here, 0 in"),
        (sweeper(30, **{"optimizer.lr": "interval(1, 2)"}), ["trainer.epochs=int(interval(1, 9))"],
         "trainer.epochs: None (baseline) vs int(interval(1, 9)) (GAL)"),
        (sweeper(30), [], "optimizer.lr: interval(1, 2) (baseline) vs None (GAL)"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError, match="the two arms of an equal-budget search would differ") as error:
            check_equal_budget(on, "on", other, overrides)
        assert named in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="compares gal=off with gal=on"):
        check_equal_budget(on, "maybe", same, [])


def test_a_search_whose_arms_would_get_different_trial_counts_is_one_line_and_writes_nothing(tmp_path):
    first = gal(["hparams_search=tune_baseline", *QUICK, "hydra.sweeper.n_trials=2"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    search = tmp_path / "runs" / "tuned" / "search" / "diabetes" / "adam"
    assert json.loads((search / "off" / BUDGET_FILE).read_text())["n_trials"] == 2
    result = gal(["hparams_search=tune_gal", *QUICK, "hydra.sweeper.n_trials=3"], tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: the two arms of an equal-budget search would differ (n_trials 3 here, 2 in ")
    )
    assert not (search / "on").exists()
    # each trial was scored on the validation split, and the best one's settings are the final runs' overrides
    trials = [json.loads(p.read_text()) for p in (search / "off").glob("trial=*/metrics.json")]
    study = yaml.safe_load((search / "off" / "optimization_results.yaml").read_text())
    best = min(trials, key=lambda trial: trial["selected"]["val"]["mse"])
    assert study["best_value"] == pytest.approx(best["selected"]["val"]["mse"])
    overrides = best_overrides(tmp_path, "diabetes", "off")
    assert f"optimizer.lr={best['config']['optimizer']['lr']}" in overrides
    assert f"task.global_batch_size={best['config']['task']['global_batch_size']}" in overrides


def test_a_search_without_a_validation_split_is_refused(tmp_path):
    result = gal(["hparams_search=tune_baseline", *QUICK, "hydra.sweeper.n_trials=1", "task.val_size=0"], tmp_path)
    assert "error: " in result.stderr and "a search scores each trial on the validation split" in result.stderr
    assert not list(tmp_path.rglob("metrics.json"))


def test_make_tuned_runs_both_arms_with_one_trial_count():
    dry = subprocess.run(["make", "-n", "tune-search/boston/off", "tune-search/boston/on", "TUNE_TRIALS=7"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert dry.count("hydra.sweeper.n_trials=7") == 2
    assert "hparams_search=tune_baseline" in dry and "hparams_search=tune_gal" in dry
    assert dry.count("'trainer.epochs=int(interval(33, 300))'") == 2


@pytest.mark.parametrize("arm", ["baseline", "gal"])
@pytest.mark.parametrize("experiment", ["table5_boston", "table5_diabetes", "table5_california", "digits"])
def test_every_tuning_search_composes_and_validates(arm, experiment):
    from gal.validate import validate

    from .conftest import compose_config

    cfg = compose_config([f"hparams_search=tune_{arm}", f"experiment={experiment}"])
    validate(cfg)
    assert cfg.task.val_size == 0.2 and cfg.gal.enabled == (arm == "gal") and cfg.name == "tuned/search"


def test_every_reading_of_the_recipe_composes_and_validates():
    from gal.validate import validate

    from .conftest import compose_config

    for features in ("standard", "minmax", "none"):
        for target in ("standard", "none"):
            cfg = compose_config(["experiment=table5_boston", "gal=on", f"task.feature_scaling={features}",
                                  f"task.target_scaling={target}", "task.split=per_seed", "trainer.epochs=33",
                                  "optimizer.lr=0.0001"])  # fmt: skip
            validate(cfg)

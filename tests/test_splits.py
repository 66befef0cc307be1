"""The unstated choices of Table V as keys: feature and target scaling, fixed or per-seed splits, a validation split
and model selection on it (trainer.select=best_val), and the bound on GAL's change of the gradient at d = 1."""

import collections
import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.model_selection import train_test_split

from gal.adjuster import GradientAdjuster
from gal.errors import ConfigError
from gal.report.readings import distance
from gal.tasks.classification import ClassificationTask
from gal.tasks.regression import BOSTON_COLUMNS, RegressionTask, load_boston, load_diabetes
from gal.train import train
from gal.validate import validate


class Constant(torch.nn.Module):
    """A model that predicts ``value`` (in the scaled target's units) for every row."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(float(value)))

    def forward(self, x):
        return self.value.expand(len(x), 1)


def test_no_scaling_feeds_the_raw_target_to_the_loss_and_reports_in_its_units():
    x, y = load_diabetes()
    x_train, _, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
    task = RegressionTask("diabetes", [8], 32, feature_scaling="none", target_scaling="none")
    features, targets = task.train_set.tensors
    torch.testing.assert_close(targets, torch.as_tensor(y_train, dtype=torch.float32))
    torch.testing.assert_close(features, torch.as_tensor(x_train, dtype=torch.float32))
    batch = (features[:4], targets[:4])
    _, loss_fn, _ = task.features_and_loss(Constant(0.0), batch)
    torch.testing.assert_close(loss_fn(targets[:4, None]), torch.zeros(4))  # z = the raw target: zero loss
    loader = task.loaders(0, 0, 1)[1]
    assert task.evaluate(Constant(100.0), loader)["mse"] == pytest.approx(np.mean((y_test - 100.0) ** 2), rel=1e-5)


def test_standard_target_scaling_trains_on_z_scores_and_reports_in_the_original_units():
    _, _, y_train, y_test = train_test_split(*load_diabetes(), test_size=0.2, random_state=0)
    task = RegressionTask("diabetes", [8], 32)
    assert task.train_set.tensors[1].mean().abs() < 1e-5
    loader = task.loaders(0, 0, 1)[1]  # predicting 0 in z-scores is predicting the training mean
    assert task.evaluate(Constant(0.0), loader)["mse"] == pytest.approx(np.mean((y_test - y_train.mean()) ** 2), 1e-5)


def test_minmax_feature_scaling_maps_the_training_rows_onto_0_1():
    features = RegressionTask("diabetes", [8], 32, feature_scaling="minmax").train_set.tensors[0]
    torch.testing.assert_close(features.min(0).values, torch.zeros(10))
    torch.testing.assert_close(features.max(0).values, torch.ones(10))


def test_a_per_seed_split_moves_with_the_seed_and_a_fixed_one_does_not():
    def test_rows(split, seed):
        return RegressionTask("diabetes", [8], 32, split=split, seed=seed).test_set.tensors[1]

    assert torch.equal(test_rows("fixed", 0), test_rows("fixed", 7))
    assert not torch.equal(test_rows("per_seed", 0), test_rows("per_seed", 7))
    assert torch.equal(test_rows("per_seed", 3), test_rows("per_seed", 3))
    assert torch.equal(test_rows("per_seed", 0), test_rows("fixed", 0))  # per_seed at seed 0 is split_seed 0's split

    def digits_labels(split, seed):
        task = ClassificationTask("digits", 10, {"name": "digits_cnn"}, 32, split=split, seed=seed)
        return task.eval_set.tensors[0]

    assert torch.equal(digits_labels("fixed", 0), digits_labels("fixed", 5))
    assert not torch.equal(digits_labels("per_seed", 0), digits_labels("per_seed", 5))


def _rows(tensor: torch.Tensor) -> collections.Counter:
    return collections.Counter(row.numpy().tobytes() for row in tensor.reshape(len(tensor), -1))


@pytest.mark.parametrize("split", ["fixed", "per_seed"])
def test_train_validation_and_test_splits_partition_the_rows(split):
    task = RegressionTask("diabetes", [8], 32, feature_scaling="none", val_size=0.2, split=split, seed=4)
    parts = [task.train_set.tensors[0], task.val_set.tensors[0], task.test_set.tensors[0]]
    assert [len(p) for p in parts] == [282, 71, 89]  # 442 -> 89 test (ceil 20%), then 71 of the 353 (ceil 20%)
    every_row = _rows(torch.as_tensor(load_diabetes()[0], dtype=torch.float32))
    assert sum((_rows(p) for p in parts), collections.Counter()) == every_row  # each row in exactly one split
    digits = ClassificationTask("digits", 10, {"name": "digits_cnn"}, 32, val_size=0.25, split=split, seed=4)
    images = [digits.train_set.tensors[0], digits.val_set.tensors[0], digits.eval_set.tensors[0]]
    assert [len(p) for p in images] == [1077, 360, 360]
    from sklearn.datasets import load_digits

    every_image = _rows(torch.as_tensor(load_digits().data / 16.0, dtype=torch.float32))
    assert sum((_rows(p) for p in images), collections.Counter()) == every_image
    assert digits.val_set.tensors[1].bincount().min() >= 35  # stratified: every class held out in proportion


def test_without_a_validation_split_the_task_is_as_before():
    before = RegressionTask("boston", [8], 32)
    after = RegressionTask("boston", [8], 32, val_size=0.0, split="fixed", seed=9)
    assert after.val_set is None and after.val_loader(0, 1) is None
    for old, new in zip(
        before.train_set.tensors + before.test_set.tensors, after.train_set.tensors + after.test_set.tensors
    ):
        assert torch.equal(old, new)


def _boston_csv(path, shuffle_test_labels: bool) -> str:
    """scikit-learn's Boston CSV, with the target of its test rows (split_seed 0) permuted among them if asked."""
    x, y = load_boston()
    if shuffle_test_labels:
        _, test_rows = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0)
        y = y.copy()
        y[test_rows] = y[np.random.default_rng(0).permutation(test_rows)]
    frame = pd.DataFrame(np.column_stack([x, y]), columns=BOSTON_COLUMNS)
    frame.to_csv(path, index=False)
    return str(path)


def test_best_val_picks_the_same_epoch_when_the_test_labels_are_shuffled(make_config, tmp_path):
    summaries = []
    for shuffled in (False, True):
        csv = _boston_csv(tmp_path / f"boston_{shuffled}.csv", shuffled)
        cfg = make_config("task=boston", "task.hidden=[16]", f"task.csv_path={csv}", "task.val_size=0.2",
                          "trainer.select=best_val", "trainer.epochs=8", "trainer.progress=false",
                          "optimizer.lr=0.01", f"name=shuffled_{shuffled}")  # fmt: skip
        returned = train(cfg)
        summary = json.loads((tmp_path / "results" / "runs" / f"shuffled_{shuffled}" / "boston" / "adam" / "off"
                              / "seed=0" / "metrics.json").read_text())  # fmt: skip
        assert returned["mse"] == summary["selected"]["metrics"]["mse"]
        assert returned["val/mse"] == summary["selected"]["val"]["mse"]
        summaries.append(summary)
    plain, shuffled = summaries
    assert plain["selected"]["epoch"] == shuffled["selected"]["epoch"]
    assert plain["selected"]["val"] == shuffled["selected"]["val"]  # training never saw the test labels
    assert plain["selected"]["metrics"] != shuffled["selected"]["metrics"]  # the test split did change
    log = tmp_path / "results/runs/shuffled_False/boston/adam/off/seed=0/log.jsonl"
    val_mse = [row["val/mse"] for row in map(json.loads, log.read_text().splitlines()) if "val/mse" in row]
    assert len(val_mse) == 8 and plain["selected"]["val"]["mse"] == min(val_mse)
    assert plain["selected"]["epoch"] == val_mse.index(min(val_mse)) + 1  # epochs count from 1


def test_select_last_reports_the_last_evaluation(make_config, tmp_path):
    returned = train(make_config("trainer.epochs=2", "trainer.progress=false", "task.val_size=0.1"))
    summary = json.loads((tmp_path / "results/runs/default/diabetes/adam/off/seed=0/metrics.json").read_text())
    assert summary["selected"]["select"] == "last" and summary["selected"]["epoch"] == 2
    assert summary["selected"]["metrics"] == summary["metrics"] == {k: returned[k] for k in ("mae", "mse", "r2")}
    assert summary["selected"]["val"] == summary["val"]


def test_the_distance_from_the_papers_baseline_is_the_largest_gap_in_paper_stds():
    paper = {"mae": (4.0, 0.5), "mse": (23.0, 4.0), "r2": (0.77, 0.04)}
    assert distance({"mae": 3.0, "mse": 25.0, "r2": 0.75}, paper) == pytest.approx(2.0)  # MAE: |3 - 4| / 0.5
    assert distance({"mae": 4.0, "mse": 23.0, "r2": 0.89}, paper) == pytest.approx(3.0)  # R2: 0.12 / 0.04
    assert np.isnan(distance({"mae": np.nan, "mse": 23.0, "r2": 0.77}, paper))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task.feature_scaling=robust"], "task.feature_scaling must be one of standard, minmax, none; got 'robust'"),
        (["task.target_scaling=minmax"], "task.target_scaling must be one of standard, none; got 'minmax'"),
        (["task.split=random"], "task.split must be one of fixed, per_seed; got 'random'"),
        (["task.val_size=1.0"], "task.val_size must be a fraction in [0, 1) of the training split; got 1.0"),
        (["task.val_size=-0.1"], "task.val_size must be a fraction in [0, 1) of the training split; got -0.1"),
        (["task.val_size=0.95"], "task.val_size=0.95 leaves 17 of diabetes's 353 training rows, fewer than one batch"),
        (["trainer.select=best_val"], "trainer.select=best_val picks an epoch on the validation split, and this run"),
        (["trainer.select=best"], "trainer.select must be one of last, best_val; got 'best'"),
        (["task=coco", "task.val_size=0.2"], "task.val_size applies to boston, diabetes, california, digits, cifar10"),
        (["task=cifar100", "task.split=per_seed"], "task.split=per_seed applies to boston, diabetes, california"),
    ],
)
def test_a_bad_split_setting_is_one_line_before_any_data_and_writes_nothing(make_config, tmp_path, overrides, message):
    cfg = make_config(*overrides)
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    with pytest.raises(ConfigError):
        train(cfg)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("policy", ["always", "never"])
def test_at_d_1_gal_changes_each_samples_gradient_by_alpha_exactly_or_not_at_all(policy):
    torch.manual_seed(0)
    adjuster = GradientAdjuster(1, arch=[4], alpha=0.1, beta=1.0, policy=policy)
    z = torch.randn(16, 1, requires_grad=True)
    y = torch.randn(16)
    stats = adjuster.backward(z, lambda f: (f.squeeze(-1) - y) ** 2, lr=0.1)
    vanilla = 2 * (z.detach().squeeze(-1) - y) / 16
    change = (z.grad.squeeze(-1) - vanilla).abs() / vanilla.abs()
    expected = 0.1 if policy == "always" else 0.0
    torch.testing.assert_close(change, torch.full((16,), expected), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(stats.relative_change(), torch.full((16,), expected), atol=1e-5, rtol=1e-4)
    summary = stats.relative_change_summary()
    assert float(summary["relative_change_max"]) == pytest.approx(expected, abs=1e-5)


def test_the_step_logs_record_gals_relative_change(make_config, tmp_path):
    train(make_config("experiment=table5_diabetes", "gal=on", "trainer.epochs=1", "trainer.progress=false"))
    log = tmp_path / "results/runs/table5/diabetes/adam/on/seed=0/log.jsonl"
    steps = [json.loads(line) for line in log.read_text().splitlines() if '"loss"' in line]
    assert steps and all(row["relative_change"] == pytest.approx(0.001, rel=1e-3) for row in steps)
    assert all(row["relative_change_max"] <= 0.001 * (1 + 1e-3) for row in steps)

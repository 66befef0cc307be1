"""gal.report's tables: statistics against scipy, missing rows with their reason; scripts/make_tables.py."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from gal.report import TABLES
from gal.report.ablations import adarem_confirm_targets
from gal.report.render import table5_alpha
from gal.results import write_json

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_tables.py"
spec = importlib.util.spec_from_file_location("make_tables", SCRIPT)
make_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_tables)


def _write_runs(results: Path, experiment: str, dataset: str, gal: str, maes: list[float]) -> None:
    for seed, mae in enumerate(maes):
        run_dir = results / "runs" / experiment / dataset / "adam" / gal / f"seed={seed}"
        run_dir.mkdir(parents=True)
        write_json({"metrics": {"mae": mae, "mse": mae**2, "r2": 1 - mae / 10}}, run_dir / "metrics.json")


def test_table5_statistics_match_scipy(tmp_path):
    baseline, gal = [3.0, 3.2, 2.9, 3.1, 3.3], [2.5, 2.7, 2.6, 2.4, 2.8]
    _write_runs(tmp_path, "table5", "diabetes", "off", baseline)
    _write_runs(tmp_path, "table5", "diabetes", "on", gal)
    text = TABLES["table5"](tmp_path)
    t, p = stats.ttest_ind(baseline, gal)
    assert f"{np.mean(baseline):.4f}±{np.std(baseline, ddof=1):.4f}" in text
    assert f"{np.mean(gal):.4f}±{np.std(gal, ddof=1):.4f}" in text
    assert f"({t:.2f}, {p:.2e})" in text
    assert "Diabetes: GAL better on MAE, MSE, R2 (p < 0.05)" in text
    assert "41.6186±0.2989" in text  # the paper's number beside ours


def test_rows_without_runs_say_why(tmp_path, monkeypatch):
    monkeypatch.setenv("GAL_BOSTON_CSV", str(tmp_path / "absent.csv"))
    text = TABLES["table5"](tmp_path)
    assert "| Boston housing | ours: missing | data unavailable: Boston CSV not found" in text
    assert "no finished runs under results/runs/table5/diabetes/" in text
    assert "Diabetes: missing" in text


def test_no_significant_difference_is_reported_as_such(tmp_path):
    _write_runs(tmp_path, "table5", "diabetes", "off", [3.0, 3.1, 2.9])
    _write_runs(tmp_path, "table5", "diabetes", "on", [3.05, 2.95, 3.0])
    assert "Diabetes: no significant difference" in TABLES["table5"](tmp_path)


def test_sensitivity_table_uses_table5_runs_for_the_paper_alpha(tmp_path):
    _write_runs(tmp_path, "table5", "diabetes", "off", [3.0, 3.2, 2.9])
    _write_runs(tmp_path, "table5", "diabetes", "on", [3.1, 3.0, 3.0])
    _write_runs(tmp_path, "table5_alpha0.1", "diabetes", "on", [2.0, 2.1, 2.2])
    text = table5_alpha(tmp_path)
    p = stats.ttest_ind([3.0, 3.2, 2.9], [2.0, 2.1, 2.2]).pvalue
    assert f"| | 0.1 | 2.1000±0.1000 (p={p:.2g})" in text
    assert "| | 0.001 | 3.0333±0.0577" in text
    assert "| | 0.01 | no finished runs under results/runs/table5_alpha0.01/diabetes/" in text


def test_main_writes_files_and_names_the_command(tmp_path):
    _write_runs(tmp_path, "table5", "diabetes", "off", [3.0, 3.2])
    make_tables.main(["table5", "--results", str(tmp_path)])
    text = (tmp_path / "tables" / "table5.md").read_text()
    assert "`python scripts/make_tables.py table5`" in text
    with pytest.raises(SystemExit):
        make_tables.main(["table9"])


def test_ablation_table_tests_each_variant_against_the_default_gal_runs(tmp_path):
    _write_runs(tmp_path, "table5", "diabetes", "on", [3.0, 3.2, 2.9])  # mse = mae ** 2 in _write_runs
    _write_runs(tmp_path, "ablation_policy/never-per_sample=False", "diabetes", "on", [2.0, 2.1, 2.2])
    text = TABLES["ablation_policy"](tmp_path)
    default, variant = [9.0, 10.24, 8.41], [4.0, 4.41, 4.84]
    p = stats.ttest_ind(default, variant).pvalue
    assert (
        f"| | never-per_sample=False | MSE ↓ | {np.mean(variant):.4f}±{np.std(variant, ddof=1):.4f} | {p:.2g} | 3 |"
        in text
    )
    assert "| Boston housing | default: missing |" in text


def _write_adarem_runs(
    results: Path, lr: str, optimizer: str, mses: list[float | None], task: str = "diabetes"
) -> None:
    """Runs of the AdaRem sweep on one task (its metric: mse, or digits' error); None is a seed that diverged."""
    key = "error" if task == "digits" else "mse"
    for seed, mse in enumerate(mses):
        run_dir = results / "runs" / "adarem" / f"lr={lr}" / task / optimizer / "off" / f"seed={seed}"
        run_dir.mkdir(parents=True)
        summary = {"metrics": {}, "diverged": "loss is nan"} if mse is None else {
            "metrics": {key: mse, "oscillation_q": 2 * mse}}  # fmt: skip
        write_json(summary, run_dir / "metrics.json")


def test_adarem_table_compares_each_optimizer_at_its_best_lr(tmp_path):
    _write_adarem_runs(tmp_path, "0.01", "sgd", [5.0, 5.2, 5.1])
    _write_adarem_runs(tmp_path, "0.1", "sgd", [1.0, None, 1.1])  # lowest mean, but a seed diverged
    _write_adarem_runs(tmp_path, "0.01", "adarem", [3.0, 3.3, 3.1])
    _write_adarem_runs(tmp_path, "0.1", "adarem", [4.0, 4.1, 4.2])
    _write_adarem_runs(tmp_path, "0.1", "adam", [6.0, 6.1, 6.3])
    text = TABLES["adarem"](tmp_path)
    assert "| SGD-M | 0.01 | 5.1000±0.1000 | 10.2±0.2 | 3 |" in text
    assert "| AdaRem | 0.01 | 3.1333±0.1528 |" in text
    assert "| Adam | 0.1 | 6.1333±0.1528 |" in text
    p = stats.ttest_ind([5.0, 5.2, 5.1], [3.0, 3.3, 3.1]).pvalue
    assert f"- AdaRem vs SGD-M, each at its best lr: p = {p:.2g} on MSE" in text
    assert "| 0.1 | nan±nan |" in text  # the diverged seed shows in the grid
    assert "| 0.01 | 5.1000±0.1000 | 10.2±0.2 | 3.1333±0.1528 | 6.267±0.31 | missing |" in text
    assert "## Boston housing\n\nmissing: run `make adarem`" in text


def test_ablation_variants_and_adarems_best_cells_are_confirmed_with_twenty_seeds(tmp_path):
    rng = np.random.default_rng(1)
    default, noise = 3.0 + 0.1 * rng.standard_normal(20), 3.0 + 0.1 * rng.standard_normal(20)
    noise[:5] += 0.5  # worse in seeds 0-4 only: over 20 seeds the same mean
    noise[5:] -= 0.5 * 5 / 15
    _write_runs(tmp_path, "table5", "diabetes", "on", list(default))
    _write_runs(tmp_path, "ablation_random/normal-scale_by_grad=False", "diabetes", "on", list(noise))
    _write_runs(tmp_path, "ablation_random/uniform-scale_by_grad=False", "diabetes", "on", list(default[:5]))
    text = TABLES["ablation_random"](tmp_path).split("## 20-seed confirmation")[1]
    row = next(line for line in text.splitlines() if "normal-scale_by_grad=False (B)" in line)
    p20 = stats.ttest_ind(default**2, noise**2).pvalue  # MSE = MAE ** 2 in _write_runs
    assert row.startswith("| Diabetes: default (A) vs normal-scale_by_grad=False (B) | MSE ↓ |")
    assert f"({p20:.2g}) | not confirmed (B worse at 5 seeds only) |" in row
    assert "uniform" not in text  # 5 seeds only: nothing to confirm

    # AdaRem: each optimizer's best lr is picked on seeds 0-4; the best cells then run seeds 0-19
    _write_adarem_runs(tmp_path, "0.01", "sgd", [5.0, 5.2, 5.1, 5.0, 5.3] + [5.1] * 15)
    _write_adarem_runs(tmp_path, "0.1", "sgd", [6.0, 6.2, 6.1, 6.0, 6.3])
    _write_adarem_runs(tmp_path, "0.1", "adarem", [3.0, 3.3, 3.1, 3.2, 3.0] + [None] + [3.1] * 14)
    with pytest.raises(SystemExit, match="no best lr for .*diabetes/adam.*run `make adarem` first"):
        adarem_confirm_targets(tmp_path)
    _write_adarem_runs(tmp_path, "0.3", "adam", [6.0, 6.1, 6.3, 6.2, 6.1])
    text = TABLES["adarem"](tmp_path).split("## 20-seed confirmation")[1]
    row = next(line for line in text.splitlines() if line.startswith("| Diabetes: SGD-M at lr=0.01 (A) vs AdaRem"))
    assert "AdaRem at lr=0.1 (B) | MSE ↓ |" in row and row.endswith("| B diverged on 1 of 20 seeds (no t-test) |")
    assert "Adam at lr=0.3" not in text  # Adam's best cell has 5 seeds only
    for task in ("boston", "california", "digits"):
        for optimizer, lr in (("sgd", "0.01"), ("adarem", "0.1"), ("adam", "0.3")):
            _write_adarem_runs(tmp_path, lr, optimizer, [1.0, 1.1, 1.2], task=task)
    targets = adarem_confirm_targets(tmp_path)
    assert "adarem-best/diabetes/sgd/0.01" in targets and "adarem-best/digits/adam/0.3" in targets
    assert len(targets) == 12


def test_arch_ablation_lists_parameter_counts_beside_the_papers(tmp_path):
    _write_runs(tmp_path, "table5", "diabetes", "on", [3.0, 3.2, 2.9])
    _write_runs(tmp_path, "ablation_arch/mlp-256-64", "diabetes", "on", [3.0, 3.1, 3.2])
    _write_runs(tmp_path, "ablation_arch/cnn-256", "diabetes", "on", [3.0, 3.1, 3.2])
    text = TABLES["ablation_arch"](tmp_path)
    assert "| mlp-256-64 | 48.3K | 48,384 | 48,804 | 16,704 | 19,584 | 11.61 |" in text
    assert "| cnn-256 | 28.1K | 27,904 | 28,260 |" in text
    assert text.index("| | mlp-256-64 |") < text.index("| | cnn-256 |")  # MLPs first, as in Table VIII


def test_eq7_table_tests_every_arm_against_the_baseline_and_eq7_against_the_authors_term(tmp_path):
    arms = {("table5", "off"): [3.0, 3.2, 2.9], ("table5", "on"): [3.1, 3.0, 3.2],
            ("eq7_taylor64", "on"): [2.0, 2.1, 2.2], ("eq7_taylor32", "on"): [3.0, 3.1, 3.05]}  # fmt: skip
    for (experiment, gal), maes in arms.items():
        _write_runs(tmp_path, experiment, "diabetes", gal, maes)
    text = TABLES["eq7"](tmp_path)
    mse = {key: [m**2 for m in maes] for key, maes in arms.items()}
    p_c = stats.ttest_ind(mse[("table5", "off")], mse[("eq7_taylor64", "on")]).pvalue
    p_cb = stats.ttest_ind(mse[("table5", "on")], mse[("eq7_taylor64", "on")]).pvalue
    row = next(line for line in text.splitlines() if line.startswith("| Diabetes | paper |"))
    assert f"| {p_c:.2g} |" in row and row.endswith(f"| {p_cb:.2g} | 3/3/3/3 |")
    assert f"- Diabetes: taylor64 better than baseline (p = {p_c:.2g})" in text
    assert (
        "| Boston housing | paper | MSE ↓ | missing: baseline, authors, taylor64, taylor32 (run `make eq7`) |" in text
    )
    # an ablation's value under each arm: (b) from `make ablations`, (c) and (d) from eq7_<arm>_<ablation>
    swept = {"ablation_beta": [3.0, 3.1, 3.2], "eq7_taylor64_beta": [4.0, 4.1, 4.2]}
    swept["eq7_taylor32_beta"] = [3.0, 3.2, 3.1]
    for experiment, maes in swept.items():
        _write_runs(tmp_path, f"{experiment}/beta=5.0", "diabetes", "on", maes)
    text = TABLES["eq7"](tmp_path)
    row = next(line for line in text.splitlines() if line.startswith("| Diabetes | beta=5.0 |"))
    p_c = stats.ttest_ind(mse[("table5", "off")], [m**2 for m in (4.0, 4.1, 4.2)]).pvalue
    assert row.endswith("| 3/3/3/3 |") and f"| {p_c:.2g} |" in row
    assert f"- Diabetes: beta=5.0: taylor64 worse than baseline (p = {p_c:.2g})" in text
    assert "- Boston housing: missing (run `make eq7`)" in text
    diverged = tmp_path / "runs" / "eq7_taylor32_beta" / "beta=5.0" / "diabetes" / "adam" / "on" / "seed=3"
    diverged.mkdir()
    write_json({"metrics": {}, "diverged": "loss is nan"}, diverged / "metrics.json")
    text = TABLES["eq7"](tmp_path)
    assert "- Diabetes: beta=5.0: taylor32 diverged on 1 of 4 seeds (no t-test); taylor64 worse" in text
    # an ablation value's comparisons are confirmed as the paper setting's are, where it has seeds 0-19
    rng = np.random.default_rng(2)
    for experiment, gal in (("table5", "off"), ("eq7_taylor64_beta/beta=10.0", "on")):
        _write_runs(tmp_path / "twenty", experiment, "diabetes", gal, list(3.0 + 0.1 * rng.standard_normal(20)))
    text = TABLES["eq7"](tmp_path / "twenty").split("## 20-seed confirmation")[1]
    assert "| Diabetes, beta=10.0: baseline (A) vs taylor64 (B) | MSE ↓ |" in text
    assert "authors (B)" not in text  # no runs of (b): nothing to confirm


def test_tables_take_the_papers_five_seeds_and_confirm_each_comparison_with_twenty(tmp_path):
    rng = np.random.default_rng(0)
    baseline, gal = 3.0 + 0.1 * rng.standard_normal(20), 3.0 + 0.1 * rng.standard_normal(20)
    gal[:5] -= 0.5  # a difference in seeds 0-4 only
    _write_runs(tmp_path, "table5", "diabetes", "off", list(baseline))
    _write_runs(tmp_path, "table5", "diabetes", "on", list(gal))
    text = TABLES["table5"](tmp_path)
    assert f"{np.mean(baseline[:5]):.4f}±{np.std(baseline[:5], ddof=1):.4f}" in text and "| 5 / 5 |" in text
    p5, p20 = stats.ttest_ind(baseline[:5], gal[:5]).pvalue, stats.ttest_ind(baseline, gal).pvalue
    assert p5 < 0.05 <= p20
    row = next(line for line in text.splitlines() if line.startswith("| Diabetes: baseline (A) vs GAL (B) | MAE"))
    assert f"({p5:.2g}) | {np.mean(baseline):.4g} → {np.mean(gal):.4g} ({p20:.2g}) |" in row
    assert row.endswith("| not confirmed (B better at 5 seeds only) |")
    assert "| R2" not in text.split("20-seed confirmation")[1]  # R2 is MSE's affine image: the same p
    assert "20-seed confirmation: not run here" in TABLES["digits"](tmp_path)

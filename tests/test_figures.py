"""scripts/make_figures.py on a tiny results tree in the real on-disk formats."""

import importlib.util
import json
from pathlib import Path

import pytest

from gal.report.ablations import ablation_variants
from gal.report.render import task_rows

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_figures.py"
STEPS_PER_EPOCH, EPOCHS = 4, 3


@pytest.fixture(scope="module")
def make_figures():
    spec = importlib.util.spec_from_file_location("make_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_log(run_dir: Path, gal: bool, seed: int, eval_key: str, eval_shift: float = 0.0) -> None:
    """log.jsonl as gal.runlog.RunLog writes it: step rows, then one eval row per epoch (+ eval_shift)."""
    rows = []
    for epoch in range(EPOCHS):
        for i in range(STEPS_PER_EPOCH):
            step = epoch * STEPS_PER_EPOCH + i + 1
            row = {"step": step, "epoch": epoch, "loss": 1.0 / step + seed}
            if gal:
                row |= {"tentative_loss": row["loss"] - 1e-3, "remainder": (-1) ** step * 1e-3 / step,
                        "cosine": 0.1 * i, "adjusted_fraction": float(i % 2), "g_wins": float(i)}  # fmt: skip
            rows.append(row)
        eval_value = 2.0 / (epoch + 1) + seed + eval_shift
        rows.append({"step": (epoch + 1) * STEPS_PER_EPOCH, "epoch": epoch, eval_key: eval_value})
    run_dir.mkdir(parents=True)
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def overhead_case(name: str, batch: int, baseline: float, gal: float) -> dict:
    quartiles = {"median_ms": baseline, "p25_ms": baseline, "p75_ms": baseline}
    return {
        "name": name,
        "shapes": {"batch": batch, "input_shape": [13], "z_dim": 1, "model_params": 10, "gal_arch": [16, 4],
                   "gal_weights": 84},
        "median_ms_baseline": baseline, "median_ms_gal": gal, "ratio": gal / baseline,
        "baseline_ms": quartiles, "gal_ms": {**quartiles, "median_ms": gal}, "steps": 50,
    }  # fmt: skip


def throughput_case(model: str, off: float, on: float) -> dict:
    def ips(median: float) -> dict:
        return {"median": median, "p25": median, "p75": median}

    return {
        "model": model, "params": 10, "batch": 8, "image_size": 224, "steps_per_epoch": 3, "rounds": 9,
        "warmup_steps": 2,
        "images_per_s": {"trainer_gal_off": ips(off), "trainer_gal_on": ips(on), "minimal_loop": ips(off)},
        "ratios": {"trainer_overhead": {"value": 1.0, "target_min": 0.97, "met": True},
                   "gal_overhead": {"value": on / off, "target_min": 0.98, "met": True}},
    }  # fmt: skip


def write_bench(results: Path) -> None:
    header = {"timestamp": "2026-01-01T00:00:00+00:00", "torch": "2.x", "device": "Fake CPU", "num_threads": 2,
              "cpu_count": 2}  # fmt: skip
    (results / "bench").mkdir(parents=True)
    overhead = {**header, "load_avg_1m": {"start": 0.0, "end": 0.0}, "command": "python scripts/bench_gal_overhead.py",
                "cases": [overhead_case("tiny_mlp", 32, 0.5, 0.8)],
                "target": {"case": "tiny_mlp", "max_ratio": 1.05, "ratio": 1.6, "met": False}}  # fmt: skip
    throughput = {**header, "command": "python scripts/bench_throughput.py",
                  "precision": {"trainer": "off", "minimal_loop": "off"},
                  "cases": [throughput_case("resnet50", 8.0, 7.5)]}  # fmt: skip
    (results / "bench" / "gal_overhead.json").write_text(json.dumps(overhead))
    (results / "bench" / "throughput.json").write_text(json.dumps(throughput))


def test_figures_and_table7(make_figures, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    for gal in ("off", "on"):
        for seed in (0, 1):
            write_log(results / f"runs/exp/regr/adam/{gal}/seed={seed}", gal == "on", seed, "eval/mse")
            write_log(results / f"runs/exp/cls/sgd/{gal}/seed={seed}", gal == "on", seed, "eval/loss")
    write_log(results / "runs/alpha/regr/adam/on/seed=0", True, 0, "eval/mse")  # GAL arm only
    write_bench(results)

    make_figures.main(["--results", str(results), "--out", str(tmp_path / "fig")])

    pngs = sorted(p.name for p in (tmp_path / "fig").iterdir())
    assert pngs == ["curves_exp_cls_sgd.png", "curves_exp_regr_adam.png"]
    assert all((tmp_path / "fig" / name).stat().st_size > 0 for name in pngs)
    assert "skipped alpha/regr/adam: no baseline runs" in capsys.readouterr().out

    table = (results / "tables" / "table7.md").read_text()
    assert f"| {0.8 / 0.5:.3f} ({0.8 / 0.5 - 1:+.1%}) |" in table  # ms per step, GAL / baseline
    assert f"| {0.5 / 32:.4f} | {0.8 / 32:.4f} |" in table  # ms per image
    assert f"| {1 / 8.0:.4f} | {1 / 7.5:.4f} | {8.0 / 7.5:.3f} ({8.0 / 7.5 - 1:+.1%}) |" in table  # s per image
    assert "Fake CPU" in table and "`python scripts/bench_throughput.py`" in table
    assert "0.3907 | 0.4027 | +3.1%" in table


def test_fig5_shows_both_arms_and_their_difference(make_figures, tmp_path: Path) -> None:
    for gal, shift in (("off", 0.0), ("on", 0.25)):
        for seed in (0, 1, 2):
            write_log(tmp_path / f"runs/exp/regr/adam/{gal}/seed={seed}", gal == "on", seed, "eval/mse", shift)
    write_log(tmp_path / "runs/exp/regr/adam/on/seed=7", True, 7, "eval/mse", 0.25)  # no baseline seed to pair with
    (run_set,) = make_figures.find_run_sets(tmp_path)
    axes = {ax.get_title(): ax for ax in make_figures.curves_figure(run_set).axes}

    loss_lines = axes["Fig. 5: evaluation loss"].get_lines()
    assert [line.get_label() for line in loss_lines] == ["baseline", "GAL"]  # GAL drawn on top
    assert loss_lines[0].get_linestyle() != loss_lines[1].get_linestyle()  # both visible where they coincide
    assert loss_lines[0].get_linewidth() > loss_lines[1].get_linewidth()
    difference = [line for line in axes["Fig. 5: GAL − baseline, same seed"].get_lines() if line.get_label()[0] != "_"]
    assert [line.get_label() for line in difference] == ["mean over 3 seeds"]  # seed 7 has no baseline: left out
    assert difference[0].get_ydata() == pytest.approx([0.25] * EPOCHS)


def test_only_curves_leaves_the_other_outputs(make_figures, tmp_path: Path) -> None:
    for gal in ("off", "on"):
        write_log(tmp_path / f"runs/exp/regr/adam/{gal}/seed=0", gal == "on", 0, "eval/mse")
    write_log(tmp_path / "runs/eq7_taylor64/diabetes/adam/on/seed=0", True, 0, "eval/mse")
    make_figures.main(["--results", str(tmp_path), "--out", str(tmp_path / "fig"), "--only", "curves"])
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["curves_exp_regr_adam.png"]  # no eq7 figure
    assert not (tmp_path / "tables").exists()  # no table7.md


def test_table7_names_the_command_for_missing_benchmarks(make_figures, tmp_path: Path) -> None:
    table = make_figures.table7(tmp_path)
    assert "run `make bench`" in table and "run `make bench-throughput`" in table


def test_ablation_figure_plots_each_variant_against_default_and_baseline(make_figures, tmp_path: Path) -> None:
    def write_metrics(experiment: str, gal: str, errors: list[float]) -> None:
        for seed, error in enumerate(errors):
            run_dir = tmp_path / "runs" / experiment / "digits" / "sgd" / gal / f"seed={seed}"
            run_dir.mkdir(parents=True)
            (run_dir / "metrics.json").write_text(json.dumps({"metrics": {"error": error}}))

    assert not make_figures.plot_ablation(tmp_path, "beta", tmp_path / "none.png")  # no sweep, no figure
    write_metrics("digits", "off", [2.0, 2.2])
    write_metrics("digits", "on", [2.1, 2.3])
    write_metrics("ablation_beta/beta=10.0", "on", [3.0, 3.5])
    write_metrics("ablation_beta/beta=5.0", "on", [2.5])
    path = tmp_path / "ablation_beta.png"
    assert make_figures.plot_ablation(tmp_path, "beta", path) and path.stat().st_size > 0
    assert ablation_variants(tmp_path, "beta") == ["beta=5.0", "beta=10.0"]


def test_eq7_diagnostics_plot_each_arm_of_make_eq7(make_figures, tmp_path: Path) -> None:
    assert not make_figures.plot_eq7(tmp_path, tmp_path / "eq7.png")  # no Eq. 7 runs: no figure
    for experiment in ("table5", "eq7_taylor64", "eq7_taylor32"):
        for seed in range(2):
            write_log(
                tmp_path / "runs" / experiment / "diabetes" / "adam" / "on" / f"seed={seed}", True, seed, "eval/mse"
            )
    assert make_figures.plot_eq7(tmp_path, tmp_path / "eq7.png") and (tmp_path / "eq7.png").stat().st_size > 0
    rows = make_figures.eq7_step_rows(tmp_path, task_rows()[1][0], "taylor64")
    assert len(rows) == 2 * STEPS_PER_EPOCH * EPOCHS and all("remainder" in r for r in rows)


def test_readings_figure_has_a_point_per_reading(make_figures, tmp_path: Path) -> None:
    from gal.report.readings import effects
    from tests.report_fixture import write_fixture

    assert not make_figures.plot_readings(tmp_path, tmp_path / "none.png")  # no readings, no figure
    write_fixture(tmp_path / "fixture")
    points = effects(tmp_path / "fixture")
    assert [len(points[title]) for title in points] == [4, 4, 4]  # 4 readings of each data set
    distances = [d for d, _ in points["Boston housing"]]
    assert distances == sorted(distances)  # nearest the paper's baseline first
    path = tmp_path / "readings.png"
    assert make_figures.plot_readings(tmp_path / "fixture", path) and path.stat().st_size > 0

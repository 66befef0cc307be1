"""scripts/toy3d.py (Fig. 4): f against its formula and autograd, GAL with alpha 0, determinism, the files."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "toy3d.py"
spec = importlib.util.spec_from_file_location("toy3d", SCRIPT)
toy3d = importlib.util.module_from_spec(spec)
spec.loader.exec_module(toy3d)

SETTINGS = {setting.name: setting for setting in toy3d.SETTINGS}


def formula(x: float, y: float) -> float:
    return -math.sin(x**2) * math.cos(3 * y**2) * math.exp(-((x * y) ** 2)) - math.exp(-((x + y) ** 2))


@pytest.mark.parametrize("x, y", [(0.0, 0.0), (0.75, 1.0), (-1.2, 0.4)])
def test_f_matches_formula(x, y):
    value = toy3d.toy_f(torch.tensor([x, y], dtype=torch.float64)).item()
    assert value == pytest.approx(formula(x, y), abs=1e-12)


def test_f_gradient_matches_finite_difference():
    point = torch.tensor([0.75, 1.0], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(toy3d.toy_f(point), point)
    step = 1e-6
    for i, (dx, dy) in enumerate([(step, 0.0), (0.0, step)]):
        central = (formula(0.75 + dx, 1.0 + dy) - formula(0.75 - dx, 1.0 - dy)) / (2 * step)
        assert grad[i].item() == pytest.approx(central, rel=1e-6)


def test_gal_with_alpha_zero_is_standard_gd():
    setting = SETTINGS["GD"]
    standard = toy3d.run(setting, 20)
    gal = toy3d.run(setting, 20, toy3d.make_adjuster(alpha=0.0, beta=setting.beta, seed=0))
    assert gal.points == standard.points
    assert gal.f == standard.f


@pytest.mark.parametrize("name", list(SETTINGS))
def test_runs_are_deterministic_for_a_seed(name):
    setting = SETTINGS[name]
    first, second = (toy3d.run(setting, 15, toy3d.make_adjuster(setting.alpha, setting.beta, seed=3)) for _ in "ab")
    assert first.points == second.points
    assert first.adjusted == second.adjusted and first.remainder == second.remainder
    assert len(first.f) == 16 and len(first.adjusted) == 15
    other = toy3d.run(setting, 15, toy3d.make_adjuster(setting.alpha, setting.beta, seed=4))
    assert other.remainder != first.remainder  # the seed reaches h


def test_step_within_best_on_a_hand_made_curve():
    curve = [1.0, 0.5, -0.9985, -0.9995, -0.999, -1.0, -0.9]
    assert toy3d.step_within_best(curve) == 3  # -0.9995 is the first value within 1e-3 of -1.0
    assert toy3d.step_within_best([2.0, 1.0, 1.0]) == 1
    assert toy3d.step_within_best(curve, tolerance=0.01) == 2


def test_main_writes_figure_and_table(tmp_path):
    figure, table = tmp_path / "fig4.png", tmp_path / "fig4.md"
    argv = ["--out-figure", str(figure), "--out-table", str(table), "--seed", "1", "--steps-scale", "0.1"]
    toy3d.main(argv)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = table.read_text()
    assert f"`python scripts/toy3d.py {' '.join(argv)}`" in text
    assert "seed 1" in text
    for name in SETTINGS:
        assert f"| {name} | standard | {round(SETTINGS[name].steps * 0.1)} |" in text
        assert f"| {name} | GAL |" in text


def test_main_rejects_a_non_positive_steps_scale(tmp_path):
    with pytest.raises(ValueError, match="steps-scale"):
        toy3d.main(
            ["--out-figure", str(tmp_path / "f.png"), "--out-table", str(tmp_path / "t.md"), "--steps-scale", "0"]
        )


def test_main_with_seeds_writes_the_seeds_table(tmp_path):
    figure, table, seeds_table = tmp_path / "fig4.png", tmp_path / "fig4.md", tmp_path / "fig4_seeds.md"
    outputs = ["--out-figure", str(figure), "--out-table", str(table), "--out-seeds-table", str(seeds_table)]
    toy3d.main([*outputs, "--seeds", "2", "5", "--steps-scale", "0.05"])
    text = seeds_table.read_text()
    assert "over 2 seeds (2, 5)" in text and "| lower (of 2) | higher (of 2) |" in text
    assert f"`python scripts/toy3d.py {' '.join(outputs)} --seeds 2 5 --steps-scale 0.05`" in text
    for name in SETTINGS:
        assert (
            sum(line.startswith(f"| {name} | {round(SETTINGS[name].steps * 0.05)} |") for line in text.splitlines())
            == 1
        )
    single = table.read_text()  # the first seed's table, footed by the command that writes it alone
    assert "seed 2 (h's" in single
    assert f"`python scripts/toy3d.py {' '.join(outputs[:4])} --seed 2 --steps-scale 0.05`" in single


@pytest.mark.parametrize("seeds", [["1"], ["1", "1"]])
def test_main_rejects_fewer_than_two_distinct_seeds(tmp_path, seeds):
    with pytest.raises(ValueError, match="two distinct seeds"):
        toy3d.main(["--out-table", str(tmp_path / "t.md"), "--seeds", *seeds])

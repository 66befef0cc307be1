"""scripts/toy_adarem.py: AdaRem with lambda 0 is SGD, the start points, Q of a straight path, JSON -> Markdown."""

import importlib.util
import json
from functools import partial
from pathlib import Path

import pytest
import torch

from gal.optim import OPTIMIZERS
from gal.report.toy import markdown
from gal.toy import START

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "toy_adarem.py"
spec = importlib.util.spec_from_file_location("toy_adarem", SCRIPT)
toy_adarem = importlib.util.module_from_spec(spec)
spec.loader.exec_module(toy_adarem)


def test_adarem_with_lambda_zero_follows_plain_sgd():
    # lambda^t starts at lambda^0 = 1 and step 0 is SGD's (m_0 = 0); after the first epoch_end lambda^t = 0 and
    # a_t = 1, so with one-step epochs the whole path is SGD's.
    adarem = partial(OPTIMIZERS["adarem"], weight_decay=0.0, momentum_beta=0.9, lam=0.0)
    sgd = partial(OPTIMIZERS["sgd"], weight_decay=0.0, momentum=0.0)
    start = toy_adarem.start_point(0)
    adarem_path = toy_adarem.run(adarem, 0.05, start, 40, epoch_steps=1)
    sgd_path = toy_adarem.run(sgd, 0.05, start, 40, epoch_steps=1)
    assert torch.equal(torch.stack(adarem_path), torch.stack(sgd_path))
    # with ten-step epochs lambda^t is 1 for the first epoch, and the momentum changes the steps
    assert not torch.equal(torch.stack(toy_adarem.run(adarem, 0.05, start, 40)), torch.stack(sgd_path))


def test_start_points_are_reproducible_per_seed_and_differ_across_seeds():
    assert torch.equal(toy_adarem.start_point(3), toy_adarem.start_point(3))
    starts = torch.stack([toy_adarem.start_point(seed) for seed in range(5)])
    assert len({tuple(start.tolist()) for start in starts}) == 5
    assert (starts - torch.tensor(START)).abs().max() <= toy_adarem.SPREAD


def test_q_of_a_straight_path_is_one():
    path = [torch.tensor([0.0, 1.0]) + t * torch.tensor([0.5, -0.25]) for t in (0.0, 0.1, 0.4, 1.0)]
    assert toy_adarem.metrics(path)["q"] == pytest.approx(1.0)
    back_and_forth = [torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.5, 2.0])]
    assert toy_adarem.metrics(back_and_forth)["q"] == pytest.approx((3.0 + 1.0) / 2)  # x: 1.5 / 0.5, y: 2 / 2


def test_json_round_trips_into_markdown(tmp_path):
    out = tmp_path / "toy" / "adarem_toy.json"
    toy_adarem.main(["--out", str(out), "--seeds", "0", "1", "--steps", "12"])
    data = json.loads(out.read_text())
    assert data["settings"]["steps"] == 12 and data["settings"]["epoch_steps"] == toy_adarem.EPOCH_STEPS
    for name, (_, grid, _) in toy_adarem.OPTIMIZERS_COMPARED.items():
        assert [float(lr) for lr in data["runs"][name]] == list(grid)
        assert all(len(values) == 2 for by_lr in data["runs"][name].values() for values in by_lr.values())
    text = markdown(data)
    assert text.startswith("## Toy problem (Fig. 4's f)\n")
    assert "### Toy problem: every lr" in text and "`python scripts/toy_adarem.py --out" in text
    summary = text.split("Paired t-tests")[0]
    for name in toy_adarem.OPTIMIZERS_COMPARED:
        assert sum(line.startswith(f"| {name} |") for line in summary.splitlines()) == 1
    assert "| AdaRem - SGD-M | Q |" in text and "| AdaRem - Adam | final f |" in text


def test_main_rejects_a_single_seed(tmp_path):
    with pytest.raises(ValueError, match="two distinct seeds"):
        toy_adarem.main(["--out", str(tmp_path / "t.json"), "--seeds", "0"])

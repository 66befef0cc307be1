"""A synthetic results/ tree that every table of gal.report draws on, in the trainer's on-disk layout.

tests/golden/tables/<table>.md holds what scripts/make_tables.py built from it; tests/test_report.py rebuilds every
table and compares byte for byte. Regenerate the golden files (after a change meant to alter a table) with
`python -m tests.report_fixture tests/golden/tables`.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from gal.results import write_json

ROOT = Path(__file__).resolve().parents[1]
REGRESSION = {"boston": 16.8, "diabetes": 3490.0, "california": 0.283}
SCALE = {"boston": 1.0, "diabetes": 80.0, "california": 0.006}


def _run(results: Path, folder: str, metrics: dict | None, best: dict | None = None, steps: list | None = None,
         config: dict | None = None):  # fmt: skip
    run = results / "runs" / folder
    run.mkdir(parents=True)
    summary = {"metrics": {}, "diverged": "loss is nan"} if metrics is None else {"metrics": metrics}
    if config is not None:
        summary["config"] = config
    if best is not None:
        summary["best"] = {"metric": "error", "epoch": 3, "metrics": best}
    write_json(summary, run / "metrics.json")
    if steps is not None:
        (run / "log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in steps))


def _regression(rng, task: str, shift: float = 0.0) -> dict:
    mse = REGRESSION[task] + SCALE[task] * (rng.standard_normal() + shift)
    return {"mae": float(np.sqrt(mse)), "mse": float(mse), "r2": float(1 - mse / (4 * REGRESSION[task]))}


def _digits(rng, shift: float = 0.0) -> dict:
    return {"error": float(2.0 + 0.4 * (rng.standard_normal() + shift)), "loss": float(0.07 + 0.01 * rng.random())}


def _arm(results, rng, experiment, task, optimizer, gal, seeds, shift=0.0, steps=None):
    for seed in seeds:
        metrics = _digits(rng, shift) if task == "digits" else _regression(rng, task, shift)
        _run(results, f"{experiment}/{task}/{optimizer}/{gal}/seed={seed}", metrics, steps=steps)


def write_fixture(results: Path) -> None:
    """Every experiment the tables read, a few seeds each; some arms with 20 seeds, some missing, one diverged."""
    rng = np.random.default_rng(22)
    steps = [{"epoch": 0, "step": s, "adjusted_fraction": 1.0 - 0.1 * s, "remainder": -1e-8 * (s + 1)}
             for s in range(3)] + [{"epoch": 0, "split": "test", "mse": 1.0}]  # fmt: skip
    tasks = {**{t: "adam" for t in REGRESSION}, "digits": "sgd"}
    for task, optimizer in tasks.items():
        experiment = "digits" if task == "digits" else "table5"
        seeds = range(20) if task in ("diabetes", "digits") else range(5)
        _arm(results, rng, experiment, task, optimizer, "off", seeds)
        _arm(results, rng, experiment, task, optimizer, "on", seeds, shift=-1.5 if task == "boston" else 0.0,
             steps=steps)  # fmt: skip
        for folder in ("pre_logits", "first_hidden"):
            _arm(results, rng, f"where_to_inject/{folder}", task, optimizer, "on", range(5), steps=steps)
        for arm in ("taylor64", "taylor32"):
            _arm(results, rng, f"eq7_{arm}", task, optimizer, "on", range(5), shift=0.3)
            for value in ("alpha=0.01", "alpha=0.5"):
                _arm(results, rng, f"eq7_{arm}_alpha/{value}", task, optimizer, "on", range(5))
        for ablation, variants in (("policy", ["always-per_sample=False", "never-per_sample=False"]),
                                   ("random", ["uniform-scale_by_grad=False", "normal-scale_by_grad=True"]),
                                   ("alpha", ["alpha=0.01", "alpha=0.5"]), ("beta", ["beta=5.0", "beta=10.0"]),
                                   ("arch", ["mlp-256", "cnn-256-64"])):  # fmt: skip
            for variant in variants:
                _arm(results, rng, f"ablation_{ablation}/{variant}", task, optimizer, "on", range(5),
                     shift=2.0 if variant == "alpha=0.5" else 0.0)  # fmt: skip
        for lr in ("lr=0.01", "lr=0.1"):
            for compared in ("sgd", "adarem", "adam"):
                for seed in range(20 if lr == "lr=0.1" else 5):
                    metrics = _digits(rng) if task == "digits" else _regression(rng, task)
                    metrics["oscillation_q"] = float(3.0 + rng.random())
                    diverged = compared == "adam" and lr == "lr=0.1" and seed == 2
                    _run(results, f"adarem/{lr}/{task}/{compared}/off/seed={seed}", None if diverged else metrics)
    for alpha in ("0.01", "0.1", "0.5"):  # Table V's alpha sweep; 0.1 only on California: the others say how to run it
        for task in REGRESSION if alpha != "0.1" else ["california"]:
            _arm(results, rng, f"table5_alpha{alpha}", task, "adam", "on", range(5), shift=float(alpha) * 4)
    for table, task, optimizers in (("table1", "cifar10", ("sgd", "lookahead")), ("table2", "cifar100", ("sgd",))):
        for optimizer in optimizers:
            for gal in ("off", "on"):
                for seed in range(3):
                    last = {"error": float(11.8 + rng.standard_normal() * 0.1)}
                    _run(results, f"{table}/{task}/{optimizer}/{gal}/seed={seed}", last,
                         best={"error": last["error"] - 0.2})  # fmt: skip
    for gal in ("off", "on"):
        for seed in range(3):
            top1 = float(76.4 + 0.05 * rng.standard_normal())
            _run(results, f"table3_resnet50/imagenet/rmsproptf/{gal}/seed={seed}", {"acc1": top1, "acc5": top1 + 16.6},
                 best={"acc1": top1 + 0.1, "acc5": top1 + 16.7})  # fmt: skip
        coco = {k: float(v + rng.random()) for k, v in zip(("AP", "AP50", "AP75", "APS", "APM", "APL"),
                                                            (39, 60, 41, 18, 42, 58))}  # fmt: skip
        _run(results, f"table4_detr_r50/coco/adamw/{gal}/seed=0", coco)  # R101 left out: its row says how to run it
    _readings(results, np.random.default_rng(5))
    _tuned(results, np.random.default_rng(7))
    (results / "toy").mkdir(parents=True)
    for name in ("adarem_toy.json", "eq7_toy.json"):
        shutil.copy(ROOT / "results" / "toy" / name, results / "toy" / name)


PAPER_BASELINE = {"boston": (23.0956, 4.1695), "diabetes": (3226.0238, 38.8293), "california": (2.1168, 0.3629)}
# (feature scaling, target scaling, epochs, lr, the baseline's MSE offset in paper stds, GAL's shift in seed stds)
READINGS = [("standard", "standard", 30, 0.001, 3.0, 0.0), ("none", "none", 10, 0.01, 0.4, -2.5),
            ("minmax", "standard", 90, 0.0001, 1.2, 0.5), ("none", "standard", 30, 0.01, 12.0, 0.0)]  # fmt: skip


BOUND_STEPS = [
    {"epoch": 0, "step": s, "loss": 1.0, "adjusted_fraction": float(s > 0), "relative_change": 0.001 * (s > 0),
     "relative_change_max": 0.001 * (s > 0)}
    for s in range(4)
]  # fmt: skip


def _reading_metrics(rng, task: str, offset: float, shift: float) -> dict:
    mean, std = PAPER_BASELINE[task]
    mse = mean + std * offset + 0.3 * std * (rng.standard_normal() + shift)
    return {"mae": float(np.sqrt(mse)), "mse": float(mse), "r2": float(1 - mse / (2 * mean))}


def _readings(results: Path, rng) -> None:
    """Table V's readings (gal.report.readings): 4 per data set at 5 seeds (one with a diverged GAL seed); the
    nearest two with seeds 0-19 under both splits (the third's are missing)."""
    for task in ("boston", "diabetes", "california"):
        for index, (features, target, epochs, lr, offset, shift) in enumerate(READINGS):
            name = f"x_{features}-y_{target}-e{epochs}-lr{lr}"
            config = {"task": {"feature_scaling": features, "target_scaling": target}, "trainer": {"epochs": epochs},
                      "optimizer": {"lr": lr}}  # fmt: skip
            nearest = offset < 2
            for folder, seeds in (("table5_readings", range(20 if nearest else 5)),
                                  ("table5_readings_per_seed", range(20) if nearest else ())):  # fmt: skip
                for gal in ("off", "on"):
                    for seed in seeds:
                        diverged = index == 3 and gal == "on" and seed == 1
                        metrics = None if diverged else _reading_metrics(rng, task, offset, shift if gal == "on" else 0)
                        logged = nearest and gal == "on" and folder == "table5_readings"
                        _run(results, f"{folder}/{name}/{task}/adam/{gal}/seed={seed}", metrics, config=config,
                             steps=BOUND_STEPS if logged else None)  # fmt: skip


def _tuned(results: Path, rng) -> None:
    """Equal-budget searches (gal.report.tuned): diabetes and digits finished with their 20 seeds, Boston searched
    but its GAL seeds missing; California not searched."""
    space = {"optimizer.lr": "tag(log, interval(1e-4, 1e-1))", "trainer.epochs": "int(interval(10, 90))"}
    for task, optimizer, finals in (("diabetes", "adam", ("off", "on")), ("digits", "sgd", ("off", "on")),
                                    ("boston", "adam", ("off",))):  # fmt: skip
        for gal in ("off", "on"):
            search = results / "runs" / "tuned" / "search" / task / optimizer / gal
            params = {**space, **({"gal.alpha": "tag(log, interval(1e-4, 0.5))"} if gal == "on" else {})}
            search.mkdir(parents=True)
            write_json({"arm": gal, "n_trials": 4, "sampler_seed": 0, "params": params}, search / "budget.json")
            best = {"optimizer.lr": 0.0031, "trainer.epochs": 41, **({"gal.alpha": 0.002} if gal == "on" else {})}
            (search / "optimization_results.yaml").write_text(
                "name: optuna\nbest_params:\n" + "".join(f"  {k}: {v}\n" for k, v in best.items())
                + f"best_value: {3300.5 if task != 'digits' else 2.5}\n"
            )  # fmt: skip
            for trial in range(4 if gal == "off" else 3):
                _run(results, f"tuned/search/{task}/{optimizer}/{gal}/trial={trial:03d}", {"mse": 1.0})
            for seed in range(20) if gal in finals else ():
                shift = -1.0 if task == "diabetes" and gal == "on" else 0.0
                metrics = _digits(rng, shift) if task == "digits" else _regression(rng, task, shift)
                _run(results, f"tuned/final/{task}/{optimizer}/{gal}/seed={seed}", metrics)


if __name__ == "__main__":  # python -m tests.report_fixture <out dir>: the golden tables from this fixture
    import subprocess
    import tempfile

    out = Path(sys.argv[1]).resolve()
    with tempfile.TemporaryDirectory() as scratch:
        write_fixture(Path(scratch))
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tables.py"), "--results", scratch,
                        "--out", str(out), *sys.argv[2:]], check=True)  # fmt: skip

"""Every config file composes, instantiates and trains a step: a typo fails here, not on a cluster."""

import itertools
import math
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from gal.optim import build_optimizer
from gal.schedule import build_scheduler
from gal.train import build_task
from gal.trainee import build_adjuster

from .conftest import CONFIG_DIR, compose_config
from .synthetic_images import image_task_overrides

EXPERIMENTS = sorted(p.stem for p in Path(CONFIG_DIR, "experiment").glob("*.yaml"))
ABLATIONS = sorted(p.stem for p in Path(CONFIG_DIR, "ablation").glob("*.yaml"))
OPTIMIZERS = sorted(p.stem for p in Path(CONFIG_DIR, "optimizer").glob("*.yaml"))
TASKS = sorted(p.stem for p in Path(CONFIG_DIR, "task").glob("*.yaml"))


@pytest.mark.parametrize("gal", ["off", "on"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, gal):
    cfg = compose_config([f"experiment={experiment}", f"gal={gal}"])
    assert cfg.gal.enabled == (gal == "on")
    assert f"/{gal}/seed=0" in cfg.run_dir
    adjuster = build_adjuster(cfg.gal, feature_dim=1)
    assert (adjuster is not None) == (gal == "on")


def test_table5_presets_follow_the_paper():
    expected = {"boston": ([100, 50], [16, 4]), "diabetes": ([64, 32], [128, 4]), "california": ([256, 64], [128, 2])}
    for dataset, (hidden, arch) in expected.items():
        cfg = compose_config([f"experiment=table5_{dataset}", "gal=on"])
        assert (cfg.task.dataset, list(cfg.task.hidden), list(cfg.gal.arch)) == (dataset, hidden, arch)
        assert (cfg.gal.alpha, cfg.gal.beta, cfg.optimizer.name) == (0.001, 0.001, "adam")


@pytest.mark.parametrize("task", TASKS)
def test_every_task_builds_and_trains_one_step(task, tmp_path):
    if task == "california" and not _california_available():
        pytest.skip(reason="California housing is not in scikit-learn's cache on this machine")
    cfg = compose_config([f"task={task}", "gal=on", *image_task_overrides(task, tmp_path)])
    task_obj = build_task(cfg.task)
    model = task_obj.build_model()
    adjuster = build_adjuster(cfg.gal, task_obj.feature_dim)
    groups = task_obj.param_groups(model) if hasattr(task_obj, "param_groups") else model
    optimizer = build_optimizer(groups, adjuster, **OmegaConf.to_container(cfg.optimizer))
    train_loader, eval_loader = task_obj.loaders(0, 0, 1)
    z, loss_fn, *other_loss = task_obj.features_and_loss(model, next(iter(train_loader)))
    stats = adjuster.backward(z, loss_fn, lr=optimizer.param_groups[0]["lr"], other_loss=(other_loss or [None])[0])
    optimizer.step()
    assert torch.isfinite(stats.loss)
    metrics = task_obj.evaluate(model, eval_loader).values()
    # COCO reports NaN for size ranges that have no ground truth (the synthetic set has no large boxes)
    assert any(math.isfinite(value) for value in metrics) and not any(math.isinf(value) for value in metrics)


def test_paper_presets_follow_the_paper():
    expected = {  # experiment: (task, optimizer, GAL arch, alpha, beta), PAPER_NOTES Tables I-III
        "table1_cifar10_sgd": ("cifar10", "sgd", [100, 32, 16], 0.001, 1.0),
        "table1_cifar10_lookahead": ("cifar10", "lookahead", [100, 32, 16], 0.01, 1.0),
        "table1_cifar10_adabound": ("cifar10", "adabound", [100, 32, 16], 0.01, 10.0),
        "table2_cifar100_sgd": ("cifar100", "sgd", [256, 64, 32], 0.01, 1.0),
        "table2_cifar100_lookahead": ("cifar100", "lookahead", [256, 64, 32], 0.001, 5.0),
        "table2_cifar100_adabound": ("cifar100", "adabound", [256, 64, 32], 0.01, 10.0),
        "table3_imagenet_resnet50": ("imagenet", "rmsproptf", [512, 128], 0.001, 0.001),
        "table3_imagenet_effnet_b2": ("imagenet", "rmsproptf", [512, 256], 0.001, 0.001),
    }
    for experiment, (task, optimizer, arch, alpha, beta) in expected.items():
        cfg = compose_config([f"experiment={experiment}", "gal=on"])
        assert (cfg.task.dataset, cfg.optimizer.name, list(cfg.gal.arch)) == (task, optimizer, arch), experiment
        assert (cfg.gal.alpha, cfg.gal.beta) == (alpha, beta), experiment
        if task.startswith("cifar"):
            assert (cfg.task.model.name, cfg.task.model.pretrained, cfg.task.image_size) == (
                "tf_efficientnet_b1.aa_in1k",  # the authors' efficientnet_pytorch weights (see cifar10.yaml)
                True,
                224,
            )
            assert (cfg.task.model.drop_rate, cfg.task.model.drop_path_rate) == (0.2, 0.2)
            assert (cfg.task.global_batch_size, cfg.task.drop_last, cfg.task.get("label_smoothing", 0.0)) == (
                320, False, 0.0,
            )  # fmt: skip
            assert (cfg.trainer.precision, cfg.optimizer.filter_bias_and_bn) == ("off", False)
            assert (cfg.scheduler.name, cfg.trainer.epochs) == ("multistep", 300)
        else:  # the authors' timm fork: train_gal.sh flags and train_gal.py defaults
            size = 260 if "effnet" in experiment else 224
            assert (cfg.task.image_size, cfg.task.crop_pct, cfg.task.interpolation) == (size, 0.875, "bicubic")
            assert (cfg.task.global_batch_size, cfg.task.label_smoothing, cfg.task.drop_last) == (800, 0.1, True)
            assert cfg.task.augment.train_interpolation == "random" and cfg.scheduler.warmup_epochs == 3
            assert (cfg.trainer.precision, cfg.optimizer.filter_bias_and_bn) == ("fp16", True)
    for experiment in ("table4_coco_detr_r50", "table4_coco_detr_r101"):  # facebookresearch/detr main.py
        cfg = compose_config([f"experiment={experiment}"])
        assert (cfg.trainer.precision, cfg.task.global_batch_size) == ("off", 16)


def test_cifar_schedule_decays_at_epochs_100_and_200():
    cfg = compose_config(["experiment=table2_cifar100_sgd"])
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = build_scheduler(optimizer, 300, 10, **OmegaConf.to_container(cfg.scheduler))
    lrs = []
    for epoch in range(300):  # as the trainer: step(epoch + 1) after each epoch
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step(epoch + 1)
    assert lrs[:100] == [1.0] * 100
    assert lrs[100:200] == pytest.approx([0.1] * 100)
    assert lrs[200:] == pytest.approx([0.01] * 100)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_takes_a_step_with_h_as_a_param_group(optimizer):
    cfg = compose_config([f"optimizer={optimizer}", "gal=on", "gal.lr=0.5"])
    model = torch.nn.Linear(3, 4)
    adjuster = build_adjuster(cfg.gal, feature_dim=4)
    opt = build_optimizer(model, adjuster, gal_lr=cfg.gal.lr, **OmegaConf.to_container(cfg.optimizer))
    assert [g["lr"] for g in opt.param_groups] == [cfg.optimizer.lr, 0.5]
    before = [p.detach().clone() for p in model.parameters()]
    adjuster.backward(model(torch.randn(8, 3)), lambda z: (z**2).mean(), lr=cfg.optimizer.lr)
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def _california_available() -> bool:
    from gal.tasks.regression import DatasetUnavailableError, load_california

    try:
        load_california(download=False)
    except DatasetUnavailableError:
        return False
    return True


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_every_ablation_gives_each_variant_its_own_run_directory(ablation):
    compose_config(["experiment=digits", f"ablation={ablation}"])
    swept = dict(HydraConfig.get().sweeper.params)
    sweeps = OverridesParser.create().parse_overrides([f"{key}={values}" for key, values in swept.items()])
    variants = list(itertools.product(*[[f"{o.key_or_group}={v}" for v in o.sweep_string_iterator()] for o in sweeps]))
    run_dirs = set()
    for variant in variants:
        cfg = compose_config(["experiment=digits", f"ablation={ablation}", *variant])
        assert "${" not in cfg.run_dir
        run_dirs.add(cfg.run_dir)
    assert len(variants) > 1 and len(run_dirs) == len(variants)


def test_arch_ablation_names_the_run_directory_after_h():
    cfg = compose_config(["experiment=digits", "ablation=arch", "gal=on", "gal.kind=cnn", "gal.arch=[256,64]"])
    assert cfg.name == "ablation_arch/cnn-256-64"
    assert build_adjuster(cfg.gal, feature_dim=10).count_weights() == 9 * 256 + 9 * 256 * 64 + 64 * 10


@pytest.mark.parametrize("ablation", [name for name in ABLATIONS if name != "adarem"])
def test_ablation_experiment_is_the_sweep_on_the_papers_setting(ablation):
    shortcut = compose_config([f"experiment=ablation_{ablation}"])
    shortcut_sweep = dict(HydraConfig.get().sweeper.params)
    general = compose_config(["experiment=table2_cifar100_sgd", f"ablation={ablation}", "gal=on"])
    assert shortcut_sweep == dict(HydraConfig.get().sweeper.params)
    assert OmegaConf.to_container(shortcut, resolve=True) == OmegaConf.to_container(general, resolve=True)

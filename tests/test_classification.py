"""Image classification through the shared trainer, on tiny synthetic data in the real formats."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader

from gal.errors import ConfigError
from gal.precision import memory_format_of
from gal.tasks.classification import ClassificationTask, create_model
from gal.train import train

from .conftest import compose_config
from .synthetic_images import image_task_overrides

QUICK = ["trainer.epochs=1", "trainer.progress=false"]


@pytest.mark.parametrize(
    "experiment",
    ["table1_cifar10_sgd", "table2_cifar100_lookahead", "table1_cifar10_adabound", "table3_imagenet_resnet50"],
)
@pytest.mark.parametrize("gal", ["off", "on"])
def test_paper_experiments_train_end_to_end_on_synthetic_data(tmp_path, experiment, gal):
    task = compose_config([f"experiment={experiment}"]).task.dataset
    overrides = [f"experiment={experiment}", f"gal={gal}", *QUICK, *image_task_overrides(task, tmp_path / "data")]
    cfg = compose_config(overrides, tmp_path / "results")
    metrics = train(cfg)
    assert set(metrics) == {"acc1", "acc5", "error", "loss"}
    summary = json.loads((Path(cfg.run_dir) / "metrics.json").read_text())
    assert summary["steps"] == (4 if task != "imagenet" else 3)  # drop_last batches of 8
    if gal == "on":
        widths = [cfg.task.num_classes, *cfg.gal.arch, cfg.task.num_classes]
        assert summary["gal_weights"] == sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def test_imagenet_recipe_has_ema_step_schedule_and_own_gal_lr(tmp_path):
    overrides = ["experiment=table3_imagenet_effnet_b2", "gal=on", *QUICK, "trainer.epochs=2"]
    cfg = compose_config(overrides + image_task_overrides("imagenet", tmp_path / "data"), tmp_path / "results")
    assert (cfg.optimizer.name, cfg.scheduler.name, cfg.trainer.ema_decay, cfg.gal.lr) == (
        "rmsproptf", "step", 0.9999, 0.016,
    )  # fmt: skip
    train(cfg)
    state = torch.load(Path(cfg.run_dir) / "last.pt", weights_only=True)
    assert state["ema"] and state["scheduler"]["decay_rate"] == 0.97
    # the model's and h's parameters each without, then with weight decay (filter_bias_and_bn)
    groups = state["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.0, 1e-5, 0.0, 1e-5]
    assert state["scaler"]["scale"] > 0  # fp16 with loss scaling, as the authors' apex O1


def test_digits_learns(tmp_path):
    cfg = compose_config(["experiment=digits", "gal=on", "trainer.epochs=3", "trainer.progress=false"], tmp_path)
    assert train(cfg)["acc1"] > 85.0


def test_class_count_mismatch_fails_before_training(tmp_path):
    overrides = ["task=cifar100", "task.num_classes=10", *image_task_overrides("cifar100", tmp_path / "data")]
    cfg = compose_config([*overrides, *QUICK], tmp_path / "results")
    with pytest.raises(ValueError, match="set task.num_classes=100"):
        train(cfg)
    assert not (tmp_path / "results").exists()


def test_missing_data_root_says_where_the_data_goes(tmp_path):
    cfg = compose_config(["task=imagenet", f"task.root={tmp_path / 'absent'}", *QUICK], tmp_path / "results")
    assert not (tmp_path / "absent").exists()
    with pytest.raises(Exception, match="train"):
        train(cfg)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'efficientnet_b9'"):
        create_model("efficientnet_b9", num_classes=10)


def test_pretrained_weights_offline_say_how_to_place_them(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    # huggingface_hub reads HF_HUB_OFFLINE when imported; once imported it would try the network (and back off)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="pretrained=false"):
        create_model("resnet18", num_classes=10, pretrained=True)


def test_a_pretrained_tag_timm_does_not_know_lists_its_tags():
    with pytest.raises(ValueError, match=r"no pretrained tag 'tf_efficientnet_b1.bogus'.*tf_efficientnet_b1.aa_in1k"):
        create_model("tf_efficientnet_b1.bogus", num_classes=10, pretrained=True)


def test_missing_weights_name_the_tag_and_both_ways_to_place_them(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError) as error:
        create_model("tf_efficientnet_b1.aa_in1k", num_classes=10, pretrained=True)
    message = str(error.value)
    assert "huggingface-cli download timm/tf_efficientnet_b1.aa_in1k" in message
    assert "task.model.pretrained_file=PATH" in message and "pretrained=false" in message


def test_pretrained_file_loads_local_weights_and_a_new_classifier(tmp_path):
    """Offline weights: timm's pretrained_cfg_overlay(file=...) loads them; the 1000-class head is replaced."""
    source = timm.create_model("test_efficientnet.r160_in1k", num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    model = create_model(
        "test_efficientnet.r160_in1k", 10, pretrained=True, pretrained_file=str(tmp_path / "weights.pth")
    )
    assert torch.equal(model.conv_stem.weight, source.conv_stem.weight)
    assert model.get_classifier().out_features == 10
    with pytest.raises(ConfigError, match="task.model.pretrained_file=.*absent.pth is not a file"):
        create_model("test_efficientnet.r160_in1k", 10, pretrained=True, pretrained_file=str(tmp_path / "absent.pth"))


NO_HUB = "http://127.0.0.1:9"  # the discard port: nothing listens, so a connection is refused at once

LOAD_FROM_THE_HUB = """
import sys, timm, torch
from gal.errors import WeightsUnavailableError
from gal.tasks.classification import create_model
try:
    model = create_model("test_efficientnet.r160_in1k", 10, pretrained=True)
except WeightsUnavailableError as error:
    sys.exit(f"error: {error}")
source = torch.load(sys.argv[1], weights_only=True)
print("equal" if torch.equal(model.conv_stem.weight, source["conv_stem.weight"]) else "different")
"""


def load_from_the_hub(tmp_path: Path, weights: Path) -> subprocess.CompletedProcess:
    """create_model(pretrained=True) in a fresh process with no network (the hub's port refuses) and no
    HF_HUB_OFFLINE, as a new user offline runs it; huggingface_hub reads its cache path when imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and "proxy" not in k.lower()}
    env |= {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": NO_HUB}
    command = [sys.executable, "-c", LOAD_FROM_THE_HUB, str(weights)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_offline_without_hf_hub_offline_fails_at_once_or_loads_the_cached_file(tmp_path):
    """No retry loop: an unreachable hub is seen before huggingface_hub is asked; a file already in its cache
    (the layout `huggingface-cli download` writes) is loaded without the network."""
    source = timm.create_model("test_efficientnet.r160_in1k", num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    result = load_from_the_hub(tmp_path, tmp_path / "weights.pth")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "the hub is unreachable: 127.0.0.1:9" in result.stderr and "huggingface-cli download" in result.stderr

    repo = tmp_path / "hf" / "hub" / "models--timm--test_efficientnet.r160_in1k"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    torch.save(source.state_dict(), snapshot / "pytorch_model.bin")
    result = load_from_the_hub(tmp_path, tmp_path / "weights.pth")
    assert (result.returncode, result.stdout.strip()) == (0, "equal"), result.stderr[-2000:]


def test_label_smoothing_is_in_the_training_loss_and_gals_not_in_the_test_loss():
    task = ClassificationTask("digits", 10, {"name": "digits_cnn"}, 32, label_smoothing=0.1)
    model = task.build_model()
    images, labels = next(iter(task.loaders(0, 0, 1)[0]))
    logits, loss_fn, _ = task.features_and_loss(model, (images, labels))
    smoothed = (0.9 * -logits.log_softmax(1).gather(1, labels[:, None])[:, 0]) - 0.1 * logits.log_softmax(1).mean(1)
    torch.testing.assert_close(loss_fn(logits), smoothed)  # timm's LabelSmoothingCrossEntropy, per sample
    assert task.evaluate(model, task.loaders(0, 0, 1)[1])["loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(model(task.eval_set.tensors[0]), task.eval_set.tensors[1]).item(), rel=1e-5
    )


def test_evaluate_equals_the_metrics_computed_by_hand_over_the_whole_split():
    task = ClassificationTask("digits", 10, {"name": "digits_cnn"}, 32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    images, labels = task.eval_set.tensors
    with torch.no_grad():
        logits = model(images)
    top1 = (logits.argmax(1) == labels).sum().item()
    top5 = (logits.topk(5, dim=1).indices == labels[:, None]).any(1).sum().item()
    metrics = task.evaluate(model, DataLoader(task.eval_set, batch_size=50))  # 360 samples: a last batch of 10
    assert metrics["acc1"] == 100 * top1 / len(labels) and metrics["acc5"] == 100 * top5 / len(labels)
    assert metrics["error"] == 100 * (1 - top1 / len(labels))
    expected_loss = nn.functional.cross_entropy(logits.double(), labels).item()
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-sync detection needs a CUDA device")
def test_evaluate_syncs_once_whatever_the_number_of_batches_on_cuda():
    task = ClassificationTask("digits", 10, {"name": "digits_cnn"}, 32)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).cuda()
    task.evaluate(model, DataLoader(task.eval_set, batch_size=180))  # warm-up: lazy CUDA set-up may sync
    counts = []
    for batch_size in (180, 72):  # 2 batches, then 5
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                task.evaluate(model, DataLoader(task.eval_set, batch_size=batch_size))
        finally:
            torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(warning.message) for warning in caught))
    assert counts == [1, 1]  # the final read of the sums, not one per batch


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_the_global_batch_is_split_among_the_processes(world_size):
    task = ClassificationTask("digits", 10, {"name": "digits_cnn"}, global_batch_size=32)
    images, _ = next(iter(task.loaders(0, 0, world_size)[0]))
    assert len(images) == 32 // world_size


def test_a_global_batch_the_processes_do_not_divide_is_refused_before_training(tmp_path):
    task = ClassificationTask("digits", 10, {"name": "digits_cnn"}, global_batch_size=30)
    with pytest.raises(ValueError, match="task.global_batch_size=30 does not divide among 4 processes"):
        task.loaders(0, 0, 4)


def test_eval_shards_are_disjoint_and_cover_the_split():
    task = ClassificationTask("digits", 10, {"name": "digits_cnn"}, global_batch_size=33)
    shards = [task.loaders(0, rank, 3)[1].dataset.indices for rank in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(len(task.eval_set)))


@pytest.mark.parametrize("gal", [pytest.param("off", marks=pytest.mark.slow), "on"])  # "on" takes the GAL path too
def test_ddp_matches_one_process_on_the_same_global_batch(tmp_path, gal):
    """The same config (global batch 32) on 2 gloo processes (16 each) and on 1: same batches, same averaged
    gradient, and with GAL the same decisions and h (alpha 1, tentative lr 5000: some tentative steps overshoot).

    One epoch (44 steps): training is chaotic enough that float rounding alone (even a different
    thread count in one process) grows to ~1e-2 in the weights by the second epoch.
    """
    common = [
        "experiment=digits",
        f"gal={gal}",
        "gal.alpha=1.0",
        "gal.beta=1e6",
        "optimizer.lr=0.005",
        "trainer.epochs=1",
        "trainer.progress=false",
        "task.global_batch_size=32",
        f"results_dir={tmp_path}",
    ]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    subprocess.run([*torchrun, "-m", "gal", *common, "name=ddp"], check=True, cwd=tmp_path)
    subprocess.run([sys.executable, "-m", "gal", *common, "name=single"], check=True, cwd=tmp_path)
    runs = {name: tmp_path / "runs" / name / f"digits/sgd/{gal}/seed=0" for name in ("ddp", "single")}
    for part in ("model", "adjuster"):  # the adjuster state is None with GAL off
        states = {name: torch.load(run / "last.pt", weights_only=True)[part] or {} for name, run in runs.items()}
        assert states["ddp"].keys() == states["single"].keys()
        for key in states["ddp"]:
            torch.testing.assert_close(states["ddp"][key], states["single"][key], rtol=1e-3, atol=1e-4)
    metrics = {name: json.loads((run / "metrics.json").read_text()) for name, run in runs.items()}
    assert metrics["ddp"]["steps"] == metrics["single"]["steps"] == 1437 // 32
    for key, value in metrics["single"]["metrics"].items():
        assert metrics["ddp"]["metrics"][key] == pytest.approx(value, rel=1e-4), key
    rows = {name: [json.loads(line) for line in open(run / "log.jsonl")] for name, run in runs.items()}
    losses = {name: [row["loss"] for row in log if "loss" in row] for name, log in rows.items()}
    assert losses["ddp"] == pytest.approx(losses["single"], rel=1e-4)  # step losses averaged over ranks
    if gal == "on":
        decisions = {name: [row["adjusted_fraction"] for row in log if "loss" in row] for name, log in rows.items()}
        assert decisions["ddp"] == decisions["single"] and 0 < sum(decisions["single"]) < len(decisions["single"])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_paths_train_with_gal(tmp_path, precision):
    """bf16 autocast, and fp16 with a GradScaler whose scale reaches GAL as a device tensor."""
    overrides = ["experiment=digits", "gal=on", f"trainer.precision={precision}", *QUICK]
    metrics = train(compose_config(overrides, tmp_path))
    assert metrics["acc1"] > 30.0  # one epoch from 10% chance


@pytest.mark.slow
def test_torch_compile_path(tmp_path):
    overrides = ["experiment=digits", "gal=on", "trainer.compile=true", *QUICK]
    assert train(compose_config(overrides, tmp_path))["acc1"] > 30.0


class DigitsWithOwnGroups(ClassificationTask):
    """Digits whose first conv layer trains at its own lr, as DETR's backbone does."""

    def param_groups(self, model):
        first, rest = (
            list(model[0].parameters()),
            [p for p in model.parameters() if p not in set(model[0].parameters())],
        )
        return [{"params": rest}, {"params": first, "lr": 0.001}]


def test_task_param_groups_and_gradient_clipping(tmp_path):
    overrides = ["experiment=digits", "gal=on", *QUICK]
    cfg = compose_config([*overrides, "trainer.clip_grad_norm=1e-9", f"task._target_={__name__}.DigitsWithOwnGroups"],
                         tmp_path / "clipped")  # fmt: skip
    clipped = train(cfg)
    untrained = train(compose_config([*overrides, "trainer.epochs=0"], tmp_path / "untrained"))
    assert clipped["loss"] == pytest.approx(untrained["loss"], rel=1e-5)  # steps of norm <= lr * 1e-9 change nothing
    groups = torch.load(Path(cfg.run_dir) / "last.pt", weights_only=True)["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == [0.05, 0.001, 0.05]  # rest, first conv, h


def test_adarem_through_the_trainer_decays_lambda_once_per_epoch(tmp_path):
    cfg = compose_config(
        ["experiment=digits", "gal=on", "optimizer=adarem", "trainer.epochs=2", "trainer.progress=false"], tmp_path
    )
    assert train(cfg)["acc1"] > 20.0  # learning: chance is 10%
    groups = torch.load(Path(cfg.run_dir) / "last.pt", weights_only=True)["optimizer"]["param_groups"]
    assert [g["lam_t"] for g in groups] == pytest.approx([0.999**2] * 2)  # model and h


def test_evaluation_feeds_images_in_the_models_memory_format():
    model = timm.create_model("resnet18", num_classes=3)
    assert memory_format_of(model) == torch.contiguous_format
    assert memory_format_of(model.to(memory_format=torch.channels_last)) == torch.channels_last
    assert memory_format_of(nn.Linear(4, 2)) == torch.contiguous_format  # no 4-d weight


def test_a_resumed_run_draws_the_augmentations_of_the_uninterrupted_one(tmp_path):
    """ImageNet's RandAugment, random erasing, dropout and drop-path, in a worker process: the workers are
    seeded from the checkpointed generator each epoch, so the resumed epochs see the same images."""
    data = image_task_overrides("imagenet", tmp_path / "data")
    common = [*data, "task=imagenet", "gal=on", "task.num_workers=1", "task.model.drop_rate=0.3"]
    common += ["task.model.drop_path_rate=0.2", "trainer.progress=false", "optimizer=sgd", "optimizer.lr=0.05"]

    def run(name: str, epochs: int, resume: bool = False) -> dict:
        overrides = [
            *common,
            f"name={name}",
            f"trainer.epochs={epochs}",
            f"trainer.if_exists={'resume' if resume else 'error'}",
        ]
        return train(compose_config(overrides, tmp_path / "results"))

    uninterrupted = run("straight", 3)
    run("resumed", 1)
    assert run("resumed", 3, resume=True) == uninterrupted

"""The paper's tables as data: results/paper/<table>.yaml, and where each row's runs live.

Each file names the paper table it transcribes (``source``), its metrics with their direction, and per row the
experiment config (configs/experiment/) whose runs it compares plus the paper's values as printed. From them come
the "paper" lines of the tables, the Makefile's row targets (results/paper/rows.mk, :func:`make_rows`) and the README's
table of commands and numbers (:func:`readme_table`, from results/paper/readme.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[3]
PAPER_DIR = ROOT / "results" / "paper"
CONFIG_DIR = ROOT / "configs"
README_MARKERS = ("<!-- paper-table: generated from results/paper/readme.yaml by "
                  "`python scripts/make_tables.py --readme`; edit that file, not this table -->",
                  "<!-- /paper-table -->")  # fmt: skip
MAKE_ROWS_FILE = PAPER_DIR / "rows.mk"


@dataclass(frozen=True)
class Metric:
    """A metric of metrics.json, its column title, and whether lower is better."""

    key: str
    title: str
    lower_is_better: bool


@dataclass(frozen=True)
class Location:
    """Where an experiment's runs live: results/runs/<folder>/<task>/<optimizer>/<gal>/seed=<n>/."""

    folder: str
    task: str
    optimizer: str


@cache
def experiment_location(experiment: str) -> Location:
    """The run folder of ``experiment=<experiment>``, from the config Hydra composes for it (its ``name``, task
    and optimizer choices): the same composition `python -m gal` makes, so the tables read what training wrote."""
    from hydra import compose, initialize_config_dir

    import gal.config  # noqa: F401  (registers the schemas the configs extend)

    if not (CONFIG_DIR / "experiment" / f"{experiment}.yaml").exists():
        raise ValueError(f"no experiment {experiment!r}: configs/experiment/{experiment}.yaml does not exist")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    return Location(str(cfg.name), str(choices.task), str(choices.optimizer))


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table: its experiment (or a variant folder of the table's sweep) and the paper's values."""

    title: str
    experiment: str | None = None
    target: str | None = None  # make <target> (baseline), <target>-gal (GAL): results/paper/rows.mk
    variant: str | None = None  # a run folder of the table's ablation sweep (Tables VI, VIII)
    paper: Any = None  # {baseline, gal[, t_p]}: one string per metric; or a list of the table's columns


@dataclass(frozen=True)
class PaperTable:
    """One results/paper/<name>.yaml."""

    name: str
    title: str
    source: str
    rows: tuple[PaperRow, ...]
    metrics: tuple[Metric, ...] = ()
    seeds: int | None = None
    reported: str = "last"
    command: str | None = None
    note: str | None = None
    experiment: str | None = None
    columns: tuple[str, ...] = ()
    reference: dict[str, str] | None = None
    claim: str | None = None

    def row(self, title: str) -> PaperRow:
        for row in self.rows:
            if row.title == title:
                return row
        raise KeyError(f"{self.name}.yaml has no row {title!r}; its rows: {', '.join(r.title for r in self.rows)}")

    def command_of(self, row: PaperRow) -> str:
        """The command that makes a row's runs: the table's (when it runs every row at once), or the row's targets."""
        return self.command or f"make {row.target} {row.target}-gal"


FIELDS = {"title", "source", "rows", "metrics", "seeds", "reported", "command", "note", "experiment", "columns",
          "reference", "claim"}  # fmt: skip
ROW_FIELDS = {"title", "experiment", "target", "variant", "paper"}


@cache
def load(name: str, folder: Path = PAPER_DIR) -> PaperTable:
    """results/paper/<name>.yaml as a PaperTable; an unknown field is an error naming the file."""
    path = folder / f"{name}.yaml"
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    unknown = set(data) - FIELDS
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(FIELDS))}")
    rows = []
    for raw in data.pop("rows"):
        if set(raw) - ROW_FIELDS:
            raise ValueError(f"{path}: row {raw} has unknown field(s) {', '.join(sorted(set(raw) - ROW_FIELDS))}")
        rows.append(PaperRow(**{"title": raw.get("variant", ""), **raw}))
    metrics = tuple(Metric(**m) for m in data.pop("metrics", []))
    columns = tuple(data.pop("columns", []))
    return PaperTable(name=name, rows=tuple(rows), metrics=metrics, columns=columns, **data)


def paper_tables(folder: Path = PAPER_DIR) -> list[PaperTable]:
    """Every paper table (results/paper/*.yaml but readme.yaml), by name."""
    return [load(p.stem, folder) for p in sorted(folder.glob("*.yaml")) if p.stem != "readme"]


def seeds_list(count: int) -> str:
    return ",".join(str(seed) for seed in range(count))


def make_rows(folder: Path = PAPER_DIR) -> str:
    """results/paper/rows.mk: for every row with a target, `make <target>` (baseline) and `make <target>-gal` (GAL),
    each a --multirun over the table's seeds (SEEDS=... replaces them) that skips the runs already finished."""
    lines = [
        "# Generated from results/paper/*.yaml by `python scripts/make_tables.py --make-rows`: edit those files,",
        "# then regenerate; tests/test_paper.py checks this file is up to date. One target per paper row and arm,",
        '# e.g. `make cifar100-sgd-gal NPROC=4 SEEDS=0`; ARGS="..." adds Hydra overrides.',
    ]
    names = []
    for table in paper_tables(folder):
        for row in table.rows:
            if not row.target:
                continue
            names.append(row.target)
            seeds = f"$(if $(SEEDS),$(SEEDS),{seeds_list(table.seeds or 1)})"
            lines.append("")
            for suffix, gal in (("", "off"), ("-gal", "on")):
                lines += [
                    f"{row.target}{suffix}: venv",
                    f"\t$(TRAIN) --multirun experiment={row.experiment} gal={gal} seed={seeds} "
                    "trainer.if_exists=skip $(ARGS)",
                ]
    phony = ".PHONY: $(PAPER_ROW_NAMES) $(addsuffix -gal,$(PAPER_ROW_NAMES))"
    header = ["", f"PAPER_ROW_NAMES := {' '.join(names)}", phony]
    return "\n".join(lines[:3] + header + lines[3:]) + "\n"


def significant(mean: str, std: str, digits: int = 4) -> str:
    """ "23.10±4.17" from "23.0956", "4.1695": the mean to ``digits`` significant digits and the std to the same
    decimals, rounded half up from the printed digits (as a reader rounds them)."""
    from decimal import ROUND_HALF_UP, Decimal

    value = Decimal(mean)
    decimals = max(digits - 1 - value.adjusted(), 0)
    quantum = Decimal(1).scaleb(-decimals)
    return "±".join(str(Decimal(x).quantize(quantum, rounding=ROUND_HALF_UP)) for x in (mean, std))


def paper_cell(spec: Any, folder: Path = PAPER_DIR) -> str:
    """The README's "paper" cell: the paper's claim in words, or its numbers from a table file."""
    if isinstance(spec, str):
        return spec
    table = load(spec["table"], folder)
    column = [m.key for m in table.metrics].index(spec["metric"])
    if "row" in spec:
        values = table.row(spec["row"]).paper
        return " → ".join(significant(*values[arm][column].split("±")) for arm in ("baseline", "gal"))
    return ", ".join(f"{row.paper['baseline'][column].split('±')[0]}→{row.paper['gal'][column].split('±')[0]}"
                     for row in table.rows)  # fmt: skip


def readme_table(folder: Path = PAPER_DIR) -> str:
    """The README's table of paper rows: command, our result, the paper's (results/paper/readme.yaml)."""
    rows = OmegaConf.to_container(OmegaConf.load(folder / "readme.yaml"), resolve=True)["rows"]
    lines = ["| Paper row | Command | Ours (mean±std, 5 seeds) | Paper |", "| --- | --- | --- | --- |"]
    for row in rows:
        cells = (row["label"], row["command"], row["ours"], paper_cell(row["paper"], folder))
        lines.append("| " + " | ".join(" ".join(str(cell).split()) for cell in cells) + " |")
    return "\n".join(lines)


def with_readme_table(readme: str, folder: Path = PAPER_DIR) -> str:
    """``readme`` with the text between its paper-table markers replaced by :func:`readme_table`."""
    start, end = README_MARKERS
    if start not in readme or end not in readme:
        raise ValueError(f"README.md lacks the paper-table markers:\n{start}\n{end}")
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{readme_table(folder)}\n{end}{tail}"

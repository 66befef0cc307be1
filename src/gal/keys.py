"""The keys a command line gives: one no schema declares is refused naming the nearest declared ones, and a gal.*
value given where GAL stays off is said in a warning.

Hydra itself refuses an undeclared ``key=value`` while composing (``Key 'alpah' not in 'GalConfig'``, naming
no nearest key) and lets ``+key=value`` into a typed node; :func:`refusal` (gal.cli, before Hydra composes) and
:func:`declared_keys_only` (gal.validate, on the composed config) say both in one line.
"""

import argparse
import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gal.config import CONFIG_DIR, SCHEMAS, Config
from gal.errors import ConfigError


def refusal(argv: list[str]) -> str | None:
    """Why the command line ``argv`` cannot run, in one line, where a plain ``key=value`` sets a key no schema
    declares (``gal.alpah=0.1``, or ``optimizer.momentum`` with adam); None otherwise."""
    overrides = plain_overrides(argv)
    keys = [override.key_or_group for override in overrides if _is_setting(override)]
    chosen = chosen_schemas(overrides) if any(schema_varies(key) for key in keys) else None
    return next((problem for key in keys if (problem := undeclared_override(key, chosen))), None)


def declared_keys_only(node: DictConfig, path: str = "") -> None:
    """Refuse a key of a schema-typed node that its schema does not declare, naming the nearest declared ones.

    Hydra's ``+key=value`` adds a key even to a struct node (``++`` too, where the key is new). A dict-typed node
    (task.model, ...) has no dataclass type: any key passes there, as it should.
    """
    schema = OmegaConf.get_type(node)
    declared = [field.name for field in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    for key in node:
        if not path and key == "hydra":  # Hydra's own node (compose(return_hydra_config=True)): Hydra checks it
            continue
        if declared is not None and key not in declared:
            raise ConfigError(_not_a_setting(path, str(key), declared))
        if OmegaConf.is_missing(node, key) or OmegaConf.is_interpolation(node, key):
            continue
        if isinstance(child := node[key], DictConfig):
            declared_keys_only(child, f"{path}{key}.")


def undeclared_override(key: str, chosen: dict[str, Any] | None = None) -> str | None:
    """The refusal, in one line naming the nearest declared keys, of a plain override ``key=value`` whose key no
    schema declares; None for a declared key (or one below an open node such as task.model).

    Hydra refuses such a key while composing, with ``Key 'alpah' not in 'GalConfig'`` and no nearest key; gal.cli
    asks this first. The schema of task, optimizer and scheduler follows the file chosen: ``chosen`` maps a group
    to the schema of its choice (gal.cli composes to learn it, for a key that :func:`schema_varies` for); without
    it, a key of any of the group's schemas passes.
    """
    parts = key.split(".")
    if parts[0] == "hydra":  # Hydra's own node: Hydra checks it
        return None
    schemas: list[Any] = [Config]
    for depth, part in enumerate(parts):
        declared = list(dict.fromkeys(f.name for schema in schemas for f in dataclasses.fields(schema)))
        if part not in declared:
            return _not_a_setting("".join(f"{name}." for name in parts[:depth]), part, declared)
        if depth == 0 and part in SCHEMAS:
            schema = (chosen or {}).get(part)
            schemas = [schema] if dataclasses.is_dataclass(schema) else list(dict.fromkeys(SCHEMAS[part].values()))
        else:  # a field typed by a schema is walked into; any other (a value, an open dict) ends the check
            hints = [typing.get_type_hints(schema).get(part) for schema in schemas]
            schemas = [hint for hint in hints if dataclasses.is_dataclass(hint)]
        if not schemas:
            return None
    return None


def schema_varies(key: str) -> bool:
    """Whether ``key`` (``optimizer.momentum``) is a setting of some but not all of its group's schemas, so that
    whether it is one depends on the file chosen (sgd's, not adam's)."""
    group, _, rest = key.partition(".")
    names = [{f.name for f in dataclasses.fields(schema)} for schema in SCHEMAS.get(group, {}).values()]
    setting = rest.partition(".")[0]
    return bool(rest) and any(setting in n for n in names) and not all(setting in n for n in names)


def gal_off_warning(overrides: list[str], choices: list[str] | None = None) -> str | None:
    """The warning for ``gal.*`` settings given where GAL stays off: one line naming them, or None.

    ``overrides``: a run's or a sweep's command line (hydra.overrides.task). A single run asks once it knows that
    its GAL is off (``choices`` None); a sweep asks before its jobs, ``choices`` being its gal choice where no override
    sweeps it (hydra.runtime.choices.gal): it warns only if no choice of the sweep is other than off, since
    ``gal=off,on gal.alpha=0.1`` sets the GAL arm's alpha. An explicit ``gal.enabled`` is the user's own: no warning.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        for override in parsed:
            if override.key_or_group == "gal" and override.package is None and choices is not None:
                sweep = override.is_sweep_override()
                choices = list(override.sweep_string_iterator()) if sweep else [str(override.value())]
    except Exception:  # noqa: BLE001 (a glob or range over choices: Hydra expands it; say nothing rather than guess)
        return None
    given = [o.input_line for o in parsed if o.key_or_group.startswith("gal.") and o.type != OverrideType.DEL]
    if not given or any(o.key_or_group == "gal.enabled" for o in parsed) or set(choices or ["off"]) != {"off"}:
        return None
    settings = " ".join(given)
    return (
        f"warning: {settings} {'is' if len(given) == 1 else 'are'} set but GAL is off (gal=off): "
        f"{'this run trains' if choices is None else 'every job of this sweep trains'} the baseline; add gal=on"
    )


def _not_a_setting(path: str, key: str, declared: list[str]) -> str:
    """One line: ``path + key`` is not a setting of the node at ``path``, the nearest declared keys, and all of them."""
    node = path.rstrip(".") or "the top level"
    close = difflib.get_close_matches(key, declared, n=3)
    hint = f" (did you mean {' or '.join(path + name for name in close)}?)" if close else ""
    return f"{path}{key} is not a setting of {node}{hint}; the settings of {node} are: {', '.join(declared)}"


def plain_overrides(argv: list[str]) -> list[Any]:
    """The command line's overrides, parsed as Hydra parses them (hydra.core.override_parser's ``Override``s); none
    for a command line Hydra cannot read (Hydra's own error says what is wrong)."""
    from hydra._internal.utils import get_args_parser  # Hydra's parser of its command line (hydra.main uses it)
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = get_args_parser()
    parser.exit_on_error = False  # argparse raises instead of exiting (Python >= 3.9)
    try:
        return OverridesParser.create().parse_overrides(parser.parse_known_args(argv)[0].overrides)
    except (argparse.ArgumentError, HydraException, SystemExit):
        return []


def _is_setting(override: Any) -> bool:
    """Whether ``override`` sets a key, ``key=value`` or a sweep ``key=a,b``: not a config group's choice
    (``task=diabetes``, ``hydra/launcher=slurm``), Hydra's own ``hydra.*``, nor ``+``/``++``/``~`` (the keys these
    add or delete are gal.config.validate's to check)."""
    from hydra.core.override_parser.types import OverrideType

    key = override.key_or_group
    return (
        override.type == OverrideType.CHANGE
        and override.package is None
        and "/" not in key
        and key not in _group_names()
        and key.split(".")[0] != "hydra"
    )


def _group_names() -> set[str]:
    return {path.name for path in Path(CONFIG_DIR).iterdir() if path.is_dir()}


def plain_override_keys(argv: list[str]) -> list[str]:
    """The keys the command line's plain overrides set (:func:`_is_setting`)."""
    return [override.key_or_group for override in plain_overrides(argv) if _is_setting(override)]


def chosen_schemas(overrides: list[Any]) -> dict[str, Any] | None:
    """The schema of each config group's choice (task, optimizer, scheduler: gal.config.SCHEMAS), learnt by composing
    the command line's config choices; None where that cannot be known before the sweep (a group swept over,
    ``optimizer=sgd,adam``) or composing fails (Hydra says why when it composes)."""
    from hydra import compose, initialize_config_dir

    groups = _group_names()
    if any(o.is_sweep_override() and o.key_or_group.split("/")[0] in groups for o in overrides):
        return None
    kept = [o.input_line for o in overrides if not _is_setting(o) and not o.is_sweep_override()]
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("config", overrides=[line for line in kept if not line.startswith("hydra")])
    except Exception:  # noqa: BLE001 (any composing error is Hydra's to report, with its own message)
        return None
    return {group: OmegaConf.get_type(cfg[group]) for group in SCHEMAS if group in cfg}

"""Where the configs live, and a check of config-group choices before Hydra composes.

Hydra reports an unknown choice (``data=nope``) in several lines with its search path; this check reports it
in one line with the available options and exits with status 2.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# ${cxrsyn.sum:a,b}: a count made of two others (the duplicate-real control's 300 + k images)
OmegaConf.register_new_resolver("cxrsyn.sum", lambda *values: sum(values), replace=True)
_CHOICE = re.compile(r"^(?:\+{1,2})?(?P<group>[A-Za-z_][\w/]*)=(?P<value>\[[^()\[\]{}*?]*\]|[^()\[\]{}*?]*)$")


def available_choices(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    return sorted(path.stem for path in (conf_dir / group).glob("*.yaml"))


def unknown_choice_message(overrides: Sequence[str], conf_dir: Path = CONF_DIR) -> str | None:
    """The first ``group=value`` override whose value has no ``conf/<group>/<value>.yaml``, as one line."""
    for override in overrides:
        match = _CHOICE.match(override)
        if not match or "." in match["group"] or match["group"].startswith("hydra"):
            continue
        group = match["group"]
        if not (conf_dir / group).is_dir():
            continue
        choices = available_choices(group, conf_dir)
        values = match["value"].removeprefix("[").removesuffix("]")  # a list selects several configs
        for value in filter(None, (part.strip() for part in values.split(","))):
            if value not in choices and value != "null":
                return (
                    f"no config {value!r} in group {group!r} (conf/{group}/); "
                    f"choose one of: {', '.join(choices) or '(none yet)'}"
                )
    return None


def exit_on_unknown_choice(argv: Sequence[str] | None = None) -> None:
    """What every command checks before Hydra starts: secrets are redacted from everything printed from now
    on, a config-group choice exists, and a sweep does not list one value twice (``-m seed=0,0``)."""
    from cxrsyn.core.secrets import redact_streams

    redact_streams()
    argv = list(sys.argv[1:] if argv is None else argv)
    message = unknown_choice_message(argv) or duplicate_sweep_message(argv)
    if message:
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)


def duplicate_sweep_message(overrides: Sequence[str]) -> str | None:
    """The first sweep override that lists a value twice (``seed=0,0``, ``seed=range(0,3),2``), as one line:
    its jobs would be the same run twice, counted twice by a report."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([item for item in overrides if "=" in item])
    except Exception:  # noqa: BLE001 - Hydra reports a malformed override itself
        return None
    for override in parsed:
        if not override.is_sweep_override():
            continue
        try:
            values = [str(value) for value in override.sweep_string_iterator()]
        except Exception:  # noqa: BLE001 - interval sweeps (for optimisers) have no list of values
            continue
        repeated = sorted({value for value in values if values.count(value) > 1})
        if repeated:
            key = override.get_key_element()
            return (
                f"{key} sweeps {', '.join(repeated)} more than once ({override.input_line}): the same job would "
                f"run twice and count as two; give each value once"
            )
    return None


def compose_or_exit(config_name: str, overrides: Sequence[str]):  # noqa: ANN201 - DictConfig
    """Compose ``conf/<config_name>.yaml`` with overrides (no run folder, no logging set-up); a bad override
    is reported in one line with exit status 2, a bad value or an added key nothing reads raises one line
    (``core.validation``)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from cxrsyn.core.secrets import redact_streams
    from cxrsyn.core.validation import check_config

    redact_streams()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as error:
        line = " ".join(str(error).split())
        print(
            f"error: {line}; check the overrides against conf/{config_name}.yaml", file=sys.stderr, flush=True
        )
        sys.exit(2)
    check_config(cfg, overrides, CONF_DIR)  # bad values and +keys nothing reads: one line (CxrsynError)
    return cfg


def check_job(cfg) -> None:  # noqa: ANN001 - a DictConfig
    """``core.validation.check_config`` with the overrides of the Hydra job that composed ``cfg`` (none outside
    a job): what every Hydra command runs first."""
    from hydra.core.hydra_config import HydraConfig

    from cxrsyn.core.validation import check_config

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    check_config(cfg, overrides, CONF_DIR)


def code_version() -> dict[str, object]:
    """The git commit of this checkout and whether ``cxrsyn/`` or ``conf/`` hold uncommitted changes (both
    None outside a git checkout): recorded with every run and report."""
    import subprocess

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(
                ["git", "-C", str(CONF_DIR.parent), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    status = git("status", "--porcelain", "--", "cxrsyn", "conf")
    return {"commit": git("rev-parse", "HEAD"), "local_changes": None if status is None else bool(status)}

"""Where the configs live, and a check of config-group choices before Hydra composes.

Hydra reports an unknown choice (``data=nope``) in several lines with its search path; this check reports it
in one line with the available options and exits with status 2.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
_CHOICE = re.compile(r"^(?:\+{1,2})?(?P<group>[A-Za-z_][\w/]*)=(?P<value>[^()\[\]{}*?]*)$")


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
        for value in filter(None, (part.strip() for part in match["value"].split(","))):
            if value not in choices and value != "null":
                return (
                    f"no config {value!r} in group {group!r} (conf/{group}/); "
                    f"choose one of: {', '.join(choices) or '(none yet)'}"
                )
    return None


def exit_on_unknown_choice(argv: Sequence[str] | None = None) -> None:
    message = unknown_choice_message(list(sys.argv[1:] if argv is None else argv))
    if message:
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)

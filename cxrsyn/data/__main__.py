"""Dataset tools.

    python -m cxrsyn.data summarize data=NAME data.root=DIR [verify=true]   what is there, what is selected
    python -m cxrsyn.data prepare   data=NAME data.root=DIR                 decode every selected image once
    python -m cxrsyn.data download  rsna|kermany|nih --root DIR [--keep-zip] from Kaggle, unpacked

``summarize`` and ``prepare`` end with one line of JSON (dataset, n, n_pos, n_neg, skipped, splits, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from cxrsyn.core.config import compose_or_exit, exit_on_unknown_choice
from cxrsyn.core.errors import EXIT_USER_ERROR, report_known_errors

COMMANDS = ("summarize", "prepare", "download")


@report_known_errors
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return EXIT_USER_ERROR
    command, rest = argv[0], argv[1:]
    if command == "download":
        from cxrsyn.data.download import SOURCES, download

        parser = argparse.ArgumentParser(prog="python -m cxrsyn.data download")
        parser.add_argument("dataset", choices=sorted(SOURCES))
        parser.add_argument(
            "--root", required=True, help="folder to unpack into (data.root of the data config)"
        )
        parser.add_argument("--keep-zip", action="store_true", help="keep the downloaded archive")
        args = parser.parse_args(rest)
        download(args.dataset, args.root, keep_zip=args.keep_zip)
        return 0

    from cxrsyn.core.secrets import register_typed_secrets
    from cxrsyn.data.tools import prepare, summarize_command

    register_typed_secrets(rest)
    exit_on_unknown_choice(rest)
    cfg = compose_or_exit("data_tools", rest)
    summary = prepare(cfg) if command == "prepare" else summarize_command(cfg)
    print(json.dumps(summary, allow_nan=False))
    check = summary.get("verify")
    return 1 if check is not None and check["matches"] is False else 0


if __name__ == "__main__":
    sys.exit(main())

"""Reader studies: can readers tell synthetic radiographs from real ones, and do they see pneumonia in them?

    python -m cxrsyn.readers make data=NAME reference=NAME n_per_source=50 seed=0 out_dir=OUT
    python -m cxrsyn.readers make source=phantom out_dir=OUT           # offline, on phantom stand-ins
    python -m cxrsyn.readers score OUT answers/*.json [--out DIR]
    python -m cxrsyn.readers score OUT --simulate readers=5 [seed=0 ...]  # simulated readers (cxrsyn/readers/simulate.py)

``make`` is composed by Hydra from ``conf/readers.yaml`` (``reference=NAME`` is short for ``data@reference=NAME``);
``score`` writes ``results.json``, ``results.md`` and ``figures/`` (default: ``OUT/results/``). See
docs/reader-study.md.
"""

from __future__ import annotations

import sys

from cxrsyn.core.errors import report_known_errors

USAGE = __doc__.split("\n\n")[1]


def _make(argv: list[str]) -> None:
    import hydra
    from omegaconf import DictConfig

    from cxrsyn.core.config import CONF_DIR, check_job, exit_on_unknown_choice

    exit_on_unknown_choice(
        [f"data={arg.split('=', 1)[1]}" if arg.startswith("reference=") else arg for arg in argv]
    )
    sys.argv = [f"{sys.argv[0]} make"] + [
        f"data@{arg}" if arg.startswith("reference=") else arg for arg in argv
    ]

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="readers")
    @report_known_errors
    def main(cfg: DictConfig) -> None:
        check_job(cfg)  # bad values and +keys nothing reads: one line, before any work
        from cxrsyn.readers.make import make_study

        make_study(cfg)

    main()


@report_known_errors
def _score(argv: list[str]) -> None:
    from cxrsyn.readers.score import score_command

    score_command(argv)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("make", "score"):
        print(f"usage:\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    if argv[0] == "make":
        _make(argv[1:])
    else:
        _score(argv[1:])


if __name__ == "__main__":
    main()

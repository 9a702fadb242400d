"""Experiment loggers built from config. W&B runs offline, with no key, unless a key or login is present.
Hyperparameters reach ``csv/hparams.yaml`` and the W&B config with their secrets redacted (``core.secrets``)."""

from __future__ import annotations

import csv
import io
import netrc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_info

from cxrsyn.core.fileio import atomic_write, read_csv
from cxrsyn.core.keys import checked_key
from cxrsyn.core.secrets import redact, redact_text

WANDB_MODES = ("auto", "online", "offline")


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv; this one keeps its rows and appends. It also
    rewrites the file atomically when new columns appear: Lightning truncates it first, so a kill at that
    moment (right after an epoch's checkpoint, when epoch-level keys first arrive) emptied it."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        data = path.read_bytes()
        if data and not data.endswith(
            b"\n"
        ):  # a row torn by the kill: drop it, the resumed run logs it again
            atomic_write(path, data[: data.rfind(b"\n") + 1])
        with open(path, newline="") as handle:
            self.metrics_keys = sorted(next(csv.reader(handle), []))

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        path = Path(self.metrics_file_path)
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(path, buffer.getvalue().encode())


def redacted_params(params: Any) -> Any:
    """Hyperparameters (a mapping or a namespace) with their secrets redacted, by key name and by value."""
    if params is None:
        return None
    values = params if isinstance(params, Mapping) else vars(params)
    return redact(dict(values))


class ResumableCSVLogger(CSVLogger):
    """A CSVLogger whose metrics.csv survives a resumed run: rows logged before the crash are kept (steps
    between the last checkpoint and the crash then appear twice; the later row is the one that counts)."""

    def log_hyperparams(self, params: Any = None) -> None:
        super().log_hyperparams(redacted_params(params))

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def wandb_credentials_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class RedactingWandbLogger(WandbLogger):
    """Lightning's WandbLogger whose config (the run's and the model's hyperparameters) is redacted."""

    def log_hyperparams(self, params: Any) -> None:
        super().log_hyperparams(redacted_params(params))


def wandb_logger(
    project: str,
    save_dir: str,
    mode: str = "auto",
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    entity: str | None = None,
    job_type: str = "train",
) -> WandbLogger:
    """A WandbLogger; ``mode=auto`` goes online only when credentials exist (WANDB_API_KEY or a netrc
    login), else offline (sync later with ``wandb sync``). ``WANDB_MODE`` in the environment wins."""
    if mode not in WANDB_MODES:
        from cxrsyn.core.errors import CxrsynError

        raise CxrsynError(f"logger.mode={mode!r} is unknown; use one of {', '.join(WANDB_MODES)}")
    env_mode = os.environ.get("WANDB_MODE")
    offline = env_mode in ("offline", "dryrun") or (
        env_mode is None and (mode == "offline" or (mode == "auto" and not wandb_credentials_present()))
    )
    if offline:
        rank_zero_info(f"wandb: offline mode, run files under {save_dir}/wandb (upload later: wandb sync)")
    elif os.environ.get("WANDB_API_KEY"):
        checked_key("WANDB_API_KEY")  # a line break in the key is one line here, not a traceback quoting it
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return RedactingWandbLogger(
        project=project,
        save_dir=save_dir,
        offline=offline,
        name=redact_text(name) if name else name,
        group=redact_text(group) if group else group,
        tags=[redact_text(str(tag)) for tag in tags],
        entity=entity,
        job_type=job_type,
        log_model=False,
    )


def flat_metrics(metrics: dict, prefix: str = "test") -> dict[str, float]:
    """Numbers of ``metrics.json``'s ``test_sets`` as ``test/<set>/<path>`` keys (CI bounds as _lo / _hi)."""
    flat: dict[str, float] = {}

    def walk(value: object, key: str) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, (int, float)):
            flat[key] = float(value)
        elif isinstance(value, dict):
            for name, item in value.items():
                walk(item, f"{key}/{name}")
        elif isinstance(value, list) and len(value) == 2 and key.endswith("_ci"):
            walk(value[0], f"{key}_lo")
            walk(value[1], f"{key}_hi")

    for name, result in metrics["test_sets"].items():
        walk({k: v for k, v in result.items() if k not in ("skipped", "predictions")}, f"{prefix}/{name}")
    return flat


def log_results_to_wandb(loggers: Sequence[object], output_dir: Path, metrics: dict) -> None:
    """Send a finished run's results to every W&B logger: metrics in the summary, ROC and PR curves and the
    prediction table per test set, Grad-CAM figures; then close the W&B run, so the next multirun job
    starts its own."""
    import wandb

    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        run = logger.experiment
        run.summary.update(flat_metrics(metrics))
        run.summary.update({"seconds": metrics["seconds"], "epochs_trained": metrics.get("epochs_trained")})
        for name, result in metrics["test_sets"].items():
            table = read_csv(output_dir / result["predictions"])
            labels = table["label"].to_numpy()
            probs = table["prob"].to_numpy()
            both = list(zip(1.0 - probs, probs, strict=True))
            classes = ["normal", "pneumonia"]
            run.log(
                {
                    f"test/{name}/roc": wandb.plot.roc_curve(
                        labels, both, labels=classes, classes_to_plot=[1]
                    ),
                    f"test/{name}/pr": wandb.plot.pr_curve(labels, both, labels=classes, classes_to_plot=[1]),
                    f"test/{name}/predictions": wandb.Table(dataframe=table),
                }
            )
        figures = sorted((output_dir / "gradcam").glob("*.png"))
        if figures:
            run.log({f"gradcam/{path.stem}": wandb.Image(str(path)) for path in figures})
        run.finish()

"""The resumable CSV log keeps what an earlier, killed process wrote."""

from __future__ import annotations

import csv

from cxrsyn.training.loggers import ResumableCSVLogger


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_rows_of_a_killed_run_survive_new_columns_and_a_torn_row(tmp_path):
    first = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="", flush_logs_every_n_steps=1)
    first.log_metrics({"train/loss": 0.7, "epoch": 0}, step=0)
    first.log_metrics({"val/auroc": 0.6, "epoch": 0}, step=1)  # a new column: the file is rewritten
    path = tmp_path / "csv" / "metrics.csv"
    assert [row["step"] for row in read_rows(path)] == ["0", "1"]
    with open(path, "a") as handle:
        handle.write("0.5,1,")  # the kill tore the next row in half

    second = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="", flush_logs_every_n_steps=1)
    second.log_metrics({"train/loss_epoch": 0.4, "epoch": 1}, step=2)
    rows = read_rows(path)
    assert [row["step"] for row in rows] == ["0", "1", "2"]
    assert (
        rows[0]["train/loss"] == "0.7"
        and rows[1]["val/auroc"] == "0.6"
        and rows[2]["train/loss_epoch"] == "0.4"
    )
    assert not list(path.parent.glob(".*.tmp"))

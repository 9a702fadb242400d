"""An audit's outputs are all new or all old: a full disk mid-way leaves the previous audit.json, audit.md,
figures, label_audit.csv and exclude.txt as they were, with one line and no stray file."""

from __future__ import annotations

import pytest

from cxrsyn.core.errors import CxrsynError
from tests.auditing.test_audit import audit_overrides
from tests.conftest import compose_config
from tests.security.test_atomic_outputs import full_disk_after, snapshot


@pytest.mark.parametrize("n_writes", [2, 5])
def test_a_full_disk_leaves_the_previous_audit_intact(
    clean_set, reference_set, clean_auditor, tmp_path, monkeypatch, n_writes
):
    from cxrsyn.auditing.run import audit

    out = tmp_path / "audit"
    args = audit_overrides(clean_set, reference_set, clean_auditor, out, tmp_path / "cache")
    first = audit(compose_config("audit", [*args, "distance.enabled=false"]))
    assert {"audit.md", "label_audit.csv", "exclude.txt", "figures/label_audit.png"} <= set(first["outputs"])
    before = snapshot(out)
    full_disk_after(monkeypatch, n_writes)
    with pytest.raises(CxrsynError) as raised:
        audit(compose_config("audit", [*args, "seed=3"]))  # other numbers than the audit on disk
    assert "\n" not in str(raised.value) and "no space left" in str(raised.value)
    assert snapshot(out) == before

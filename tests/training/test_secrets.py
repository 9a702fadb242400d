"""Secrets never reach a run's identity: overrides are redacted by key name and by value."""

from cxrsyn.secrets import REDACTED, redact_overrides


def test_overrides_are_redacted_by_key_and_by_value(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-secret-value")
    overrides = ["seed=1", "+generator.api_key=typed-in", "+notes=see AIza-secret-value", "+token="]
    assert redact_overrides(overrides) == [
        "seed=1",
        f"+generator.api_key={REDACTED}",
        f"+notes=see {REDACTED}",
        "+token=",
    ]

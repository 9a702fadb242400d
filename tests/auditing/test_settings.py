"""Each audit part's settings: a frozen dataclass built once from ``conf/audit.yaml``."""

from __future__ import annotations

import dataclasses

import pytest

from cxrsyn.auditing.descriptors import CorrelationDescriptor
from cxrsyn.auditing.run import AuditSettings
from cxrsyn.core.errors import CxrsynError
from tests.conftest import compose_config


def test_every_part_gets_its_settings_from_the_config():
    settings = AuditSettings.from_config(
        compose_config("audit", ["contamination.candidates=5", "distance.enabled=false"])
    )
    assert settings.contamination.candidates == 5 and settings.contamination.false_positive_rate == 0.001
    assert settings.contamination.calibration_n == 1999 and settings.label_audit.reference_n == 1000
    assert settings.contamination.coarse == CorrelationDescriptor(
        grid=16,
        window=0.7,
        margins=(-0.06, -0.04, -0.02, 0.0, 0.02, 0.04, 0.06, 0.08),
        highpass=2.0,
        lowpass=0.5,
    )
    assert settings.contamination.fine.margins == (0.0,) and settings.contamination.fine.grid == 32
    assert settings.label_audit.score_class == "Pneumonia" and settings.label_audit.n_list == 50
    assert settings.distance.enabled is False and settings.distance.kid_subsets == 20
    assert settings.artifacts.band_fraction == 0.3
    assert settings.realism.enabled and settings.realism.crop_fractions == (0.0, 0.1, 0.2, 0.3)
    assert settings.realism.detectors == ("cnn", "statistics") and settings.realism.cnn.backbone == "resnet18"
    assert settings.realism.regions.bottom_band == 0.3 and settings.realism.crop_reference is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.distance.fid = False


def test_a_missing_setting_is_one_line_naming_it():
    with pytest.raises(CxrsynError, match=r"^config key label_audit\.score_class is missing") as error:
        AuditSettings.from_config(compose_config("audit", ["~label_audit.score_class"]))
    assert "\n" not in str(error.value)

"""reprdiag.config: one frozen AnalysisConfig, every option checked when it is made (the same
one-line UsageError through the public API), and its to_dict is report.json's options."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import reprdiag
from reprdiag.config import FILE_OPTIONS, AnalysisConfig, analysis_config
from reprdiag.errors import UsageError

BAD = [
    ({"kappa": 0}, "kappa must be a positive number, got 0"),
    ({"kappa": float("nan")}, "kappa must be a positive number"),
    ({"er_estimator": "magic"}, "magic"),
    ({"er_compat": "sloppy"}, "sloppy"),
    ({"metrics": ["vne", "rankmee"]}, "unknown metric 'rankmee'"),
    ({"metrics": ["nc1"]}, "nc1"),  # needs labels, none given
    ({"sample_size": 1}, "sample size must be at least 2, got 1"),
    ({"chunk_rows": 0}, "chunk size must be at least 1 row, got 0"),
    ({"precision": "float8"}, "float8"),
    ({"nan": "ignore"}, "ignore"),
    ({"uncertainty": True, "blocks": 4}, "--blocks must be at least 5, got 4"),
    ({"pool": "max"}, "max"),
]


@pytest.mark.parametrize(("options", "needle"), BAD, ids=[str(b[0]) for b in BAD])
def test_each_bad_option_is_one_usage_error(options: dict, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        AnalysisConfig(**options)
    assert needle in str(info.value) and "\n" not in info.value.one_line()
    assert info.value.exit_code == 2


@pytest.mark.parametrize(("options", "needle"), BAD[:2] + BAD[6:8])
def test_the_public_api_refuses_with_the_same_message(options: dict, needle: str) -> None:
    with pytest.raises(UsageError, match=needle.replace("(", r"\(")):
        reprdiag.analyze(torch.randn(20, 3, dtype=torch.float64), device="cpu", **options)


def test_frozen_and_replace_checks_again() -> None:
    config = AnalysisConfig(metrics=["vne", "rankme"])
    assert config.metrics == ("vne", "rankme")  # a list becomes a tuple
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.kappa = 3.0  # type: ignore[misc]
    assert config.replace(kappa=3.0).kappa == 3.0 and config.kappa == 10.0
    with pytest.raises(UsageError, match="sample size"):
        config.replace(sample_size=0)


def test_unknown_keyword_is_a_usage_error_naming_the_valid_ones() -> None:
    with pytest.raises(UsageError, match="unknown analysis option 'kapa'") as info:
        analysis_config(["vne"], kapa=3)
    assert "kappa" in info.value.one_line().split("valid:")[1]
    assert analysis_config(["vne"], kappa=3).metric_options() == {
        "kappa": 3, "er_estimator": "plugin", "er_compat": "exact"}


def test_to_dict_is_every_option_and_blocks_only_with_uncertainty() -> None:
    plain = AnalysisConfig().to_dict()
    assert list(plain) == list(AnalysisConfig.option_names())
    assert plain["blocks"] is None and plain["metrics"] is None
    assert AnalysisConfig(uncertainty=True, blocks=7).to_dict()["blocks"] == 7
    model = AnalysisConfig().to_dict(model=True)
    assert set(plain) - set(model) == set(FILE_OPTIONS)
    assert AnalysisConfig(labels="y.npy").extras() == {"classes"}
    assert AnalysisConfig(pair="z.npy").extras() == {"pair"}


def test_the_report_options_are_the_config() -> None:
    """Through the public API: report.json's options block is the config's to_dict."""
    x = torch.randn(40, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    report = reprdiag.analyze(x, metrics=["vne"], kappa=2.5, sample_size=30, seed=4,
                              device="cpu")
    want = AnalysisConfig(metrics=["vne"], kappa=2.5, sample_size=30, seed=4).to_dict()
    got = report.to_dict()["options"]
    assert {k: got[k] for k in want} == want

"""errors: the shared one-line helpers (did_you_mean, first_line) as the messages use them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import reprdiag
from reprdiag.errors import ConfigError, InputError, UsageError, did_you_mean, first_line
from reprdiag.gate import parse_gate_table


def test_did_you_mean_names_the_closest_valid_names_or_nothing() -> None:
    assert did_you_mean("vnee", ["vne", "rankme"]) == "did you mean 'vne'? "
    assert did_you_mean("zzz", ["vne", "rankme"]) == ""
    assert did_you_mean("layer_1", ["layer_1x", "layer_12", "head"], n=3, cutoff=0.5) == \
        "did you mean 'layer_1x', 'layer_12'? "


def test_every_unknown_name_message_uses_the_same_hint(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((50, 4))
    with pytest.raises(UsageError, match=r"unknown metric 'rankmee'; did you mean 'rankme'\? "
                                         r"valid: .*rankme_frac"):
        reprdiag.analyze(x, metrics=["rankmee"], device="cpu")
    with pytest.raises(ConfigError, match=r"unknown key 'mni' in \[gate.rules\] vne; did you "
                                          r"mean 'min'\? valid: min, max, max_drop"):
        parse_gate_table({"rules": {"vne": {"mni": 1.0}}}, "cfg")
    np.savez(tmp_path / "a.npz", embeddings=x)
    with pytest.raises(UsageError, match=r"has no key 'embedding'; did you mean 'embeddings'\? "
                                         r"valid keys: embeddings"):
        reprdiag.analyze(tmp_path / "a.npz", keys=["embedding"], device="cpu")


def test_first_line_quotes_one_line_of_a_library_message(tmp_path: Path) -> None:
    assert first_line(ValueError("\n  line one  \nline two"), limit=4) == "line"
    assert first_line(RuntimeError(), empty="") == "" and first_line(RuntimeError()) == \
        "RuntimeError"
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(InputError) as info:
        reprdiag.analyze(tmp_path / "bad.safetensors", device="cpu")
    assert "is not a readable safetensors file (" in str(info.value)
    assert "\n" not in str(info.value)

"""benchmark/speed.py: the patch-aug subcommand runs end to end and fails clearly outside a checkout."""

import json

import pytest

from patchbench.benchmark import speed


def test_patch_aug_on_a_tiny_batch(capsys):
    speed.main(["patch-aug", "--views", "2", "--img-size", "32", "--patch-size", "8", "--rounds", "1",
                "--repeats", "1"])
    out = capsys.readouterr().out
    result = json.loads(out)
    assert result["cells"] == 2 * 16
    assert result["max_abs_diff"] < 1 / 255
    assert result["ratio_cpu"] > 0 and result["batched"]["wall_s"] > 0


def test_reference_outside_a_checkout_fails_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(speed, "CHECKOUT", tmp_path)
    with pytest.raises(SystemExit, match="source checkout"):
        speed.load_test_module("patch_photometric_reference")

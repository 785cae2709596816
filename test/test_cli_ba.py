"""`mp-slam ba`: the command-line path of bundle adjustment on BAL files."""

from __future__ import annotations

import json

from mp_slam_ros.cli import main
from mp_slam_ros.io.bal import read_bal


def test_ba_cli_solves_and_writes(shared_data, tmp_path, capsys):
    # The 1,800-point Ladybug subsample: over-determined, so LM converges (dubrovnik-3-7 is not).
    source = shared_data / "ba" / "rootba_test_data" / "bal-ladybug-problem-49-7776-pre-shrink-1800.txt"
    out = tmp_path / "adjusted.txt"
    code = main(["ba", str(source), "--precision", "fp64", "--solver", "schur", "--json", "--out", str(out)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["linear_solver"] == "schur"
    assert summary["termination"] == "CONVERGENCE"
    # From 2.345e5 (the value in the data's SOURCES.md) down by a factor of ~78.
    assert abs(summary["initial_cost"] - 2.3451979857e5) < 1e-6 * 2.3451979857e5
    assert summary["final_cost"] < 0.02 * summary["initial_cost"]
    adjusted = read_bal(out)
    assert adjusted.num_observations == read_bal(source).num_observations


def test_ba_cli_reports_malformed_file(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 1 1\n0 0 1.0 x\n")
    assert main(["ba", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2" in err and "field" in err


def test_ba_cli_inner_iterations_flag(shared_data, capsys):
    """On by default (the summary counts the passes); --no-inner-iterations turns them off."""
    source = shared_data / "ba" / "rootba_test_data" / "bal-ladybug-problem-49-7776-pre-shrink-1800.txt"
    assert main(["ba", str(source), "--precision", "fp64", "--solver", "schur", "--json"]) == 0
    on = json.loads(capsys.readouterr().out)
    assert on["inner_iteration_passes"] >= 1 and on["inner_iteration_moves"] > 0
    assert main(["ba", str(source), "--precision", "fp64", "--solver", "schur", "--json", "--no-inner-iterations"]) == 0
    off = json.loads(capsys.readouterr().out)
    assert off["inner_iteration_passes"] == 0
    assert on["final_cost"] <= off["final_cost"] * (1 + 1e-6)

"""``alpaca-farm benchmark --report-to``: the tracker reaches the resolved config; an unknown one is refused."""
from __future__ import annotations

import pytest
import yaml

from alpaca_farm_env.cli import main


def test_report_to_flag_sets_the_presets_tracker(capsys):
    assert main(["benchmark", "--preset", "tiny", "--report-to", "tensorboard", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["report_to"] == "tensorboard"
    assert main(["benchmark", "--preset", "tiny", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["report_to"] == "none"


def test_an_unknown_tracker_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["benchmark", "--preset", "tiny", "--report-to", "mlflow", "--print-config"])
    assert exit_.value.code == 2 and "invalid choice: 'mlflow'" in capsys.readouterr().err

"""The local platform's Dagster instance settings (``em2q.platform``)."""

from __future__ import annotations

import yaml

from em2q.platform import dagster_yaml
from em2q_resources.settings import Settings


def test_run_queue_limits_come_from_settings_and_reach_the_instance():
    settings = Settings.from_env(
        {"EM2Q_MAX_CONCURRENT_RUNS": "6", "EM2Q_RUNS_PER_MEASUREMENT": "2",
         "EM2Q_RUNS_PER_STAGE": "chunks=2, measurement=3"}
    )  # fmt: skip
    assert settings.runs_per_stage == (("chunks", 2), ("measurement", 3))
    coordinator = yaml.safe_load(dagster_yaml(settings))["run_coordinator"]["config"]
    assert coordinator["max_concurrent_runs"] == 6
    assert coordinator["tag_concurrency_limits"] == [
        {"key": "em2q/measurement", "value": {"applyLimitPerUniqueValue": True}, "limit": 2},
        {"key": "em2q/stage", "value": "chunks", "limit": 2},
        {"key": "em2q/stage", "value": "measurement", "limit": 3},
    ]

"""The Prometheus alert rules: valid, each one fired by a promtool unit test, in step with the service.

promtool comes with Debian's ``prometheus`` package (installed in CI, see tests/external_tools.py).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.external_tools import require_tool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
HINT = "Debian package prometheus"

# The supervisor's own alerts (supervisor/health.py, docs/supervisor.md) and the rule that carries
# each one to Prometheus; the runbook's "service down" has no supervisor counterpart (nobody is left
# to raise it).
SUPERVISOR_ALERTS = {
    "bootstrap_failing": "LLMServiceBootstrapFailing",
    "kafka_errors": "LLMServiceKafkaErrors",
    "breaker_open": "LLMServiceBreakerOpen",
    "worker_fatal": "LLMServiceWorkerFatal",
    "instance_conflict": "LLMServiceInstanceConflict",
    "disk_low": "LLMServiceDiskLow",
    "slow_processing": "LLMServiceSlowProcessing",
    "consumer_lag": "LLMServiceConsumerLag",
    "cpu_high": "LLMServiceHighCPU",
    "ram_high": "LLMServiceHighRAM",
    "worker_restarting": "LLMServiceWorkerRestarting",
    "intake_paused": "LLMServiceIntakePaused",
    "token_budget_exhausted": "LLMServiceTokenBudgetExhausted",
    "model_payment_required": "LLMServiceModelPaymentRequired",
    "model_balance_low": "LLMServiceModelBalanceLow",
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool", hint=HINT)
    return subprocess.run(
        [promtool, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120, check=False
    )


def _rule_names() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)$", (DEPLOY / "alerts.yml").read_text(), flags=re.MULTILINE)


def test_rules_and_scrape_config_are_valid() -> None:
    rules = _promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(_rule_names())} rules found" in rules.stdout
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_fires_in_the_unit_tests() -> None:
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    """promtool passes a file that never names an alert; this makes sure each rule is exercised both ways."""
    text = (DEPLOY / "alerts_test.yml").read_text()
    checks = re.findall(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", text)
    firing = {name for name, empty in checks if not empty}
    quiet = {name for name, empty in checks if empty}
    names = set(_rule_names())
    assert len(names) == len(_rule_names()), "duplicate alert names"
    assert names - firing == set(), "alerts no unit test fires"
    assert names - quiet == set(), "alerts with no case where they stay quiet"


@pytest.mark.parametrize(("alert", "rule"), sorted(SUPERVISOR_ALERTS.items()))
def test_each_supervisor_alert_has_a_rule(alert: str, rule: str) -> None:
    assert rule in _rule_names()
    supervisor = Path(__file__).resolve().parents[2] / "supervisor"
    assert any(alert in (supervisor / name).read_text() for name in ("health.py", "budget.py"))


def test_every_rule_has_a_severity_and_an_action() -> None:
    text = (DEPLOY / "alerts.yml").read_text()
    blocks = re.split(r"^\s*- alert: ", text, flags=re.MULTILINE)[1:]
    for block in blocks:
        name = block.split("\n", 1)[0]
        assert re.search(r"severity: (critical|warning)\n", block), name
        assert "action: " in block, name

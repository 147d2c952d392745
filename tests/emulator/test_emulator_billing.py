"""The emulator's prepaid packages: GET /balance falls with billed usage; 402/403 on demand or when spent."""

from __future__ import annotations

from tests.emulator.conftest import EmulatorProcess
from tests.emulator.test_emulator_http import BODY, bearer, chat


def balance(emulator: EmulatorProcess, headers: dict[str, str]) -> dict[str, float]:
    response = emulator.session.get(f"{emulator.api_url}/balance", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return {entry["usage"]: entry["value"] for entry in response.json()["balance"]}


def test_balance_falls_by_the_tokens_each_answer_bills(emulator: EmulatorProcess) -> None:
    headers = bearer(emulator)
    before = balance(emulator, headers)
    answer = chat(emulator, headers, BODY)
    assert answer.status_code == 200, answer.text
    used = answer.json()["usage"]["total_tokens"]
    after = balance(emulator, headers)
    assert after["GigaChat"] == before["GigaChat"] - used
    assert after["GigaChat-Pro"] == before["GigaChat-Pro"]  # only the model that answered is billed


def test_a_spent_package_answers_402_when_enforced(emulator: EmulatorProcess) -> None:
    headers = bearer(emulator)
    emulator.control("POST", "billing", json={"enforce": True, "packages": {"GigaChat": 1}})
    assert chat(emulator, headers, BODY).status_code == 200  # 1 token left: this call may go
    refused = chat(emulator, headers, BODY)
    assert (refused.status_code, refused.json()) == (402, {"status": 402, "message": "Payment Required"})
    assert balance(emulator, headers)["GigaChat"] == 0


def test_refuse_switches_402_and_403_on_and_off(emulator: EmulatorProcess) -> None:
    headers = bearer(emulator)
    emulator.control("POST", "billing", json={"refuse": 402})
    assert chat(emulator, headers, BODY).status_code == 402
    emulator.control("POST", "billing", json={"refuse": 403})
    denied = chat(emulator, headers, BODY)
    assert (denied.status_code, denied.json()) == (403, {"status": 403, "message": "Permission denied"})
    emulator.control("POST", "billing", json={"refuse": 0})
    assert chat(emulator, headers, BODY).status_code == 200
    bad = emulator.session.post(f"{emulator.base_url}/_emulator/billing", json={"refuse": 500}, timeout=10)
    assert bad.status_code == 400


def test_reset_refills_the_packages(emulator: EmulatorProcess) -> None:
    emulator.control("POST", "billing", json={"refuse": 402, "packages": {"GigaChat": 5}})
    emulator.control("POST", "reset")
    assert emulator.control("GET", "billing")["refuse"] == 0
    headers = bearer(emulator)  # the reset dropped the tokens too
    assert chat(emulator, headers, BODY).status_code == 200
    assert balance(emulator, headers)["GigaChat"] > 900_000

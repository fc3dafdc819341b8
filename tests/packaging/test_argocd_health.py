"""Argo CD shows a Canary's health right: the health check runs in a real Lua and says what each phase means.

deploy/argocd/resource_customizations/canaryd.io/Canary/health.lua is what a
platform team puts in argocd-cm (resource.customizations.health.canaryd.io_Canary).
Each case of its health_test.yaml (Argo CD's own layout) is run with Debian's
lua5.4: the Canary is handed to the script as the global `obj`, with numbers
as floats, the way Argo CD converts JSON, and the status and message it
returns are compared. The samples are Canaries as canaryd writes them (they
validate against canaryd's models), one for every phase, paused, suspended,
not ready, and not yet observed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryd.api.constants import Phase
from canaryd.api.models import Canary
from tests.packaging.conftest import REPO

CHECK = REPO / "deploy" / "argocd" / "resource_customizations" / "canaryd.io" / "Canary"
HEALTH = CHECK / "health.lua"
CASES = yaml.safe_load((CHECK / "health_test.yaml").read_text())["tests"]
ARGO_CD_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
#: Finalizing is the current spelling of the phase; Finalising is what older canaryd versions wrote.
FINALIZING = {"Finalizing", "Finalising"}

DRIVER = """
obj = {obj}
local check = assert(loadfile({script}))
local hs = check()
io.write(tostring(hs.status), "\\n", tostring(hs.message), "\\n")
"""


def _lua() -> str:
    found = shutil.which("lua5.4")
    if found is None:
        pytest.fail("lua5.4 is missing: apt-get install -y --no-install-recommends lua5.4", pytrace=False)
    return found


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for these texts


def to_lua(value: Any) -> str:
    """A Lua table constructor for a JSON-like value; numbers become floats, as in Argo CD."""
    if isinstance(value, dict):
        items = [f"[{_lua_string(str(k))}] = {to_lua(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(float(value))
    return _lua_string(str(value))


def run_health(obj: dict[str, Any]) -> tuple[str, str]:
    program = DRIVER.format(obj=to_lua(obj), script=_lua_string(str(HEALTH)))
    result = subprocess.run([_lua(), "-"], input=program, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    status, message = result.stdout.split("\n", 1)
    return status, message.rstrip("\n")


def _sample(case: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHECK / case["inputPath"]).read_text())
    return loaded


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_health_of_each_sample(case: dict[str, Any]) -> None:
    status, message = run_health(_sample(case))
    assert status in ARGO_CD_STATUSES
    assert (status, message) == (case["healthStatus"]["status"], case["healthStatus"]["message"])


def test_every_phase_paused_and_not_ready_have_a_sample() -> None:
    samples = [_sample(case) for case in CASES]
    phases = {(s.get("status") or {}).get("phase") for s in samples}
    assert {phase.value for phase in Phase} | FINALIZING <= phases
    assert any((s.get("status") or {}).get("paused") for s in samples)
    assert any(
        c["type"] == "Ready" and c["status"] == "False" and c["reason"] not in {"PrimaryNotReady", "Deleting"}
        for s in samples
        for c in (s.get("status") or {}).get("conditions", [])
    )
    assert any(not s.get("status") for s in samples)


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_samples_are_canaries_as_canaryd_writes_them(case: dict[str, Any]) -> None:
    sample = _sample(case)
    phase = (sample.get("status") or {}).get("phase")
    known = {p.value for p in Phase}
    if phase in FINALIZING and phase not in known:
        # The models know one spelling; the script must read both.
        sample["status"]["phase"] = next(iter(FINALIZING & known))
    Canary.model_validate(sample)


def test_every_sample_is_a_case() -> None:
    used = {CHECK / c["inputPath"] for c in CASES}
    assert set((CHECK / "testdata").glob("*.yaml")) == used


def test_a_canary_read_with_integer_numbers_gets_the_same_health() -> None:
    # Argo CD hands numbers over as floats; a Lua that keeps integers must say the same.
    sample = _sample(next(c for c in CASES if c["inputPath"].endswith("paused.yaml")))
    program = DRIVER.format(obj=re.sub(r"(\d+)\.0\b", r"\1", to_lua(sample)), script=_lua_string(str(HEALTH)))
    result = subprocess.run([_lua(), "-"], input=program, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == list(run_health(sample))


def test_the_gitops_docs_carry_the_script_as_it_is() -> None:
    docs = (REPO / "docs" / "gitops.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", docs, flags=re.S)]
    config_maps = [b for b in blocks if isinstance(b, dict) and b.get("kind") == "ConfigMap"]
    assert config_maps, "docs/gitops.md shows the argocd-cm entry"
    script = config_maps[0]["data"]["resource.customizations.health.canaryd.io_Canary"]
    assert script == HEALTH.read_text()

"""The README stays true to the code: its commands, flags, fields, files and rules exist.

A newcomer follows the README literally, so every flag, environment variable,
Canary field, analysis file and RBAC rule it documents is checked here against
the source of truth (the argument parser, the settings, the CRD, the analysis/
folder, the rendered ClusterRole).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import yaml

from canaryd.cli import loadtest as loadtest_command
from canaryd.cli import run as run_command
from canaryd.loadtest.settings import LoadTestSettings
from canaryd.runtime.settings import Settings
from tests.manifests.rendering import MANIFESTS, render

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, flags=re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def test_quickstart_is_exactly_the_demo_and_the_test_command() -> None:
    quickstart = _section("Quickstart")
    (block,) = re.findall(r"```sh\n(.*?)```", quickstart, flags=re.S)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["./scripts/demo", "./scripts/test"]
    for script in commands:
        assert (REPO / script).is_file()
    assert "bash .ci/run" not in quickstart
    assert "./scripts/test" in (REPO / ".ci" / "run").read_text()


def test_every_run_flag_and_environment_variable_is_documented() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    run_command.add_arguments(parser)
    configuration = _section("Configuration")
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or not action.option_strings:
            continue
        long_flag = next(o for o in action.option_strings if o.startswith("--"))
        assert f"`{long_flag}" in configuration, f"{long_flag} is not in the README's Configuration"
    for name in Settings.model_fields:
        variable = f"CANARYD_{name.upper()}"
        assert f"`{variable}`" in configuration, f"{variable} is not in the README's Configuration"
    documented = set(re.findall(r"`(CANARYD_[A-Z_]+)`", README))
    known = {f"CANARYD_{name.upper()}" for name in Settings.model_fields}
    known |= {f"CANARYD_LOADTEST_{name.upper()}" for name in LoadTestSettings.model_fields}
    assert documented <= known, f"README documents variables that do not exist: {documented - known}"


def _spec_fields(schema: dict[str, Any], prefix: str = "") -> set[str]:
    fields: set[str] = set()
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}" if prefix else name
        fields.add(path)
        target = sub.get("items", sub) if sub.get("type") == "array" else sub
        fields |= _spec_fields(target, path)
    return fields


def test_every_canary_spec_field_is_in_the_reference() -> None:
    crd = yaml.safe_load((MANIFESTS / "crd" / "canaries.canaryd.io.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    reference = _section("The Canary resource")
    for path in sorted(_spec_fields(spec)):
        leaf = path.rsplit(".", 1)[-1]
        documented = f"{leaf}`" in reference or f".{leaf}" in reference
        assert documented, f"spec.{path} is missing from the reference"


def test_every_template_file_and_template_field_is_documented() -> None:
    metrics = _section("Metrics and templates")
    for path in sorted((REPO / "analysis").glob("*.yaml")):
        assert f"analysis/{path.name}" in metrics, f"analysis/{path.name} is not listed"
    crd = yaml.safe_load((MANIFESTS / "crd" / "metrictemplates.canaryd.io.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path in sorted(_spec_fields(spec)):
        leaf = path.rsplit(".", 1)[-1]
        assert leaf in metrics, f"MetricTemplate spec.{path} is not documented"


def test_rbac_table_lists_the_controller_rules() -> None:
    rbac = _section("Installing into a cluster")
    objects = render(MANIFESTS / "rbac")
    (role,) = [o for o in objects if (o["kind"], o["metadata"]["name"]) == ("ClusterRole", "canaryd-manager")]
    for rule in role["rules"]:
        for resource in rule["resources"]:
            rows = [line for line in rbac.splitlines() if line.startswith("|") and f"`{resource}`" in line]
            row = rows[0] if rows else None
            assert row is not None, f"{resource} has no row in the README's RBAC table"
            for verb in rule["verbs"]:
                assert verb in row, f"{resource}: verb {verb} missing from the README's RBAC table"


def test_local_links_point_at_files_that_exist() -> None:
    for target in re.findall(r"\]\(((?!https?://|#)[^)]+)\)", README):
        assert (REPO / target).exists(), f"README links to {target}, which does not exist"


def test_every_canary_status_field_is_in_the_reference() -> None:
    from pydantic.alias_generators import to_camel

    from canaryd.api.models import CanaryStatus

    reference = _section("The Canary resource")
    for name in CanaryStatus.model_fields:
        field = to_camel(name)
        documented = f"`{field}`" in reference or f"`{field}[]`" in reference
        assert documented, f"status.{field} is missing from the reference"


def test_the_canary_and_template_examples_are_valid() -> None:
    from canaryd.api.models import Canary, MetricTemplate

    models = {"Canary": Canary, "MetricTemplate": MetricTemplate}
    checked = set()
    for block in re.findall(r"```yaml\n(.*?)```", README, flags=re.S):
        doc = yaml.safe_load(block)
        model = models.get(doc.get("kind", ""))
        if model is not None:
            model.model_validate(doc)
            checked.add(doc["kind"])
    assert checked == set(models)


def test_every_loadtest_flag_and_environment_variable_is_documented() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    loadtest_command.add_arguments(parser)
    section = _section("Load tester")
    for action in parser._actions:
        long_flag = next(o for o in action.option_strings if o.startswith("--"))
        assert f"`{long_flag}" in section, f"{long_flag} is not in the README's Load tester section"
    for name in LoadTestSettings.model_fields:
        variable = f"CANARYD_LOADTEST_{name.upper()}"
        assert f"`{variable}`" in section, f"{variable} is not in the README's Load tester section"


def test_the_webhook_payload_examples_are_valid_payloads() -> None:
    import json

    from canaryd.core.webhooks import payload_id
    from canaryd.loadtest.spec import Limits, load_spec
    from tests.fixtures.webhook_receiver import schema_problems

    (example,) = re.findall(r"```json\n(.*?)```", _section("Webhook payload"), flags=re.S)
    payload = json.loads(example)
    assert schema_problems(payload) == []
    assert payload["id"] == payload_id(payload), "the example's id is the one canaryd computes"
    (curl,) = re.findall(r"-d '(\{.*?\})'", _section("Load tester"), flags=re.S)
    by_hand = json.loads(curl)
    assert schema_problems(by_hand) == []
    assert by_hand["id"] == payload_id(by_hand)
    spec = load_spec(by_hand, Limits())
    assert (spec.rps, spec.concurrency, spec.duration) == (20, 4, 60)
    assert spec.describe() in _section("Load tester")

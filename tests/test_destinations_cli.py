"""`reverse-etl destinations` lists every type with its settings; third-party adapters are found
through the entry-point group `reverse_etl.destinations`; `check` names what it cannot check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BUILT_IN = {"braze", "hubspot", "postgres", "salesforce", "webhook"}

PLUGIN = """
from pydantic import Field, SecretStr

from reverse_etl.destinations import DELIVERED, Destination, DestinationSettings


class AcmeSettings(DestinationSettings):
    api_key: SecretStr = Field(description="the Acme key")
    requests_per_second: float | None = 5


class AcmeDestination(Destination):
    contract_version = 1
    type = "acme"
    description = "Acme's CRM"
    settings_model = AcmeSettings
    operations = frozenset({"upsert"})
    max_batch_size = 25

    async def send(self, batch):
        return [DELIVERED] * len(batch.records)
"""


def install_plugin(folder: Path, source: str = PLUGIN) -> dict[str, str]:
    """A package installed the way pip installs one: its module and a dist-info folder whose
    entry_points.txt registers the adapter. Returns the environment that sees it."""
    folder.mkdir()
    (folder / "acme_destination.py").write_text(source)
    info = folder / "acme_destination-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-destination\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[reverse_etl.destinations]\nacme = acme_destination:AcmeDestination\n"
    )
    return {"PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}


def test_destinations_lists_every_type_with_its_settings(project):
    outcome = project.cli("destinations", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    listed = {item["type"]: item for item in outcome.json_lines()}
    assert set(listed) >= BUILT_IN
    webhook = {s["name"]: s for s in listed["webhook"]["settings"]}
    assert webhook["url"]["required"] and not webhook["url"]["secret"]
    assert webhook["headers"]["secret"] and webhook["signing_secret"]["secret"]
    assert webhook["batch_size"]["default"] == 100
    assert listed["webhook"]["operations"] == ["delete", "insert", "update", "upsert"]
    text = project.cli("destinations")
    assert text.exit_code == 0 and "signing_secret" in text.stdout and "hubspot" in text.stdout


def test_a_third_party_adapter_is_found_through_its_entry_point(project, tmp_path):
    env = install_plugin(tmp_path / "site")
    outcome = project.command("destinations", "--json", env=env)
    assert outcome.exit_code == 0, outcome.stderr
    [acme] = [item for item in outcome.json_lines() if item["type"] == "acme"]
    assert acme["max_batch_size"] == 25 and acme["operations"] == ["upsert"]
    assert acme["default_rate_limits"] == ["5 per 1s"]
    assert {"name": "api_key", "secret": True}.items() <= acme["settings"][0].items()
    project.warehouse("create table people as select 1 as id")
    project.destination("crm", 'type = "acme"\napi_key = "k"\nbatch_size = 500\n')
    project.sync("people", {"destination": "crm", "primary_key": "id"}, "select id from people")
    ran = project.command("run", "people", "--json", env=env)
    assert ran.exit_code == 0 and ran.json_lines()[0]["delivered"] == 1, ran
    project.sync(
        "mirrored",
        {"destination": "crm", "primary_key": "id", "mode": "mirror"},
        "select id from people",
    )
    refused = project.command("validate", env=env)
    assert refused.exit_code == 2
    assert "syncs/mirrored.sql:3" in refused.stderr and "does not support" in refused.stderr
    unknown = project.command("destinations", "--json")  # without the plugin on the path
    assert "acme" not in {item["type"] for item in unknown.json_lines()}


@pytest.mark.parametrize(
    "declared, told",
    [
        (
            "contract_version = 2",
            "is written for contract version 2; this reverse-etl speaks version 1: upgrade "
            "reverse-etl to a release that speaks contract version 2, or install a release of "
            "acme-destination made for version 1",
        ),
        ("", "declares no contract_version"),
    ],
)
def test_an_adapter_of_another_contract_version_is_refused_at_validation(
    project, tmp_path, declared, told
):
    env = install_plugin(tmp_path / "site", PLUGIN.replace("contract_version = 1", declared))
    project.warehouse("create table people as select 1 as id")
    project.destination("crm", 'type = "acme"\napi_key = "k"\n')
    project.sync("people", {"destination": "crm", "primary_key": "id"}, "select id from people")
    refused = project.command("validate", env=env)
    assert refused.exit_code == 2, refused
    where = "destinations/crm.toml:1: destination type 'acme' (acme_destination:AcmeDestination, "
    assert f"{where}from acme-destination 1.0) {told}" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    listed = project.command("destinations", "--json", env=env)
    assert listed.exit_code == 2 and told in listed.stderr, listed
    assert "acme" not in {item["type"] for item in listed.json_lines()}


def test_check_of_an_unknown_or_broken_destination_names_the_file(project):
    missing = project.cli("check", "nowhere")
    assert missing.exit_code == 2 and "destinations/nowhere.toml" in missing.stderr
    project.destination("broken", 'type = "webhook"\nurl = "ftp://example.com"\n')
    broken = project.cli("check", "broken")
    assert broken.exit_code == 2 and "destinations/broken.toml:2" in broken.stderr, broken.stderr
    project.destination("down", 'type = "webhook"\nurl = "http://127.0.0.1:9/in"\n')
    down = project.cli("check", "down", "--json")
    assert down.exit_code == 2
    [answer] = down.json_lines()
    assert answer["ok"] is False and "unreachable" in answer["error"], answer

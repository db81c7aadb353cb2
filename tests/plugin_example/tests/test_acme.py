"""The Acme destination passes the contract every built-in reverse-etl destination passes,
run against the fake Acme API; and what is Acme's own."""

from __future__ import annotations

from acme_fake import AcmeFake
from acme_reverse_etl import AcmeDestination

from reverse_etl.testing import DestinationContract, ProjectFolder


class TestAcmeContract(DestinationContract):
    destination_class = AcmeDestination
    fake_class = AcmeFake


def test_check_names_the_account(reverse_etl_project: ProjectFolder, acme: AcmeFake) -> None:
    reverse_etl_project.destination("crm", acme.destination())
    [answer] = reverse_etl_project.cli("check", "crm", "--json").json_lines()
    assert answer["ok"] is True and "'Acme Test'" in answer["detail"], answer

"""The registry of destination types: a plugin whose code fails is told from a type that does not
exist; whatever a plugin's module does at import (a KeyError, sys.exit()) is reported, never
silent; a class is checked once, when it is loaded, against everything it declares, so that
`validate` refuses what would crash `run`; a 0.3 adapter is refused with what 0.4 calls what it
still uses. Also the 0.3 import paths of the packages that kept their name, and errors that
travel between processes (pickled).

Hostile plugins are installed for real (pip, into a folder of their own, for processes that have
it on their PYTHONPATH); where no process is needed, a dist-info folder on sys.path registers
the entry points, as pip would."""

from __future__ import annotations

import importlib
import inspect
import pickle
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_plugin_example import Installed, install

from reverse_etl import errors
from reverse_etl.destinations import registry
from reverse_etl.destinations.base import Destination, SyncTarget
from reverse_etl.destinations.webhook import WebhookDestination
from reverse_etl.errors import Problem, ProjectError

PACKAGE = "hostile-destinations"

GOOD = '''
from reverse_etl.destinations import DELIVERED, Destination, DestinationSettings


class Good(Destination):
    contract_version = 1
    type = "good"
    operations = frozenset({"upsert", "delete"})

    async def send(self, batch):
        return [DELIVERED] * len(batch.records)
'''

# Each broken type: its entry point (module:attribute), and what its error must say.
CASES = '''
from pydantic import BaseModel

from reverse_etl.destinations import DELIVERED, Destination
from reverse_etl.destinations.webhook import WebhookDestination


class _Base(Destination):
    contract_version = 1

    async def send(self, batch):
        return [DELIVERED] * len(batch.records)


class NoType(_Base):
    pass


class OtherType(_Base):
    type = "something_else"


class PlainSettings(BaseModel):
    type: str


class PlainModel(_Base):
    type = "plainmodel"
    settings_model = PlainSettings


class VTrue(_Base):
    contract_version = True
    type = "vtrue"


class VFloat(_Base):
    contract_version = 1.0
    type = "vfloat"


class Batch0(_Base):
    type = "batch0"
    max_batch_size = 0


class BadOps(_Base):
    type = "badops"
    operations = frozenset({"upsert", "merge"})


class IdempotentExtra(_Base):
    type = "idempotentextra"
    operations = frozenset({"upsert"})
    idempotent_operations = frozenset({"upsert", "insert"})


class BadIdentity(_Base):
    type = "badidentity"
    key_identity = "casefold"


class Legacy(WebhookDestination):
    """0.3: extends the built-in webhook, whose receiver ignores the case of emails."""

    type = "legacy"

    @classmethod
    def key_identity(cls, settings, sync):
        return "case_insensitive"


class UsesTls(_Base):
    type = "usestls"

    @classmethod
    def uses_tls(cls, settings):
        return False


class BadAddress(_Base):
    type = "badaddress"

    @classmethod
    def address(cls, settings):
        return None
'''

BROKEN = {  # type: (entry point, what its error says)
    "keyerror": (
        "hostile_destinations.keyerror_at_import:Adapter",
        "cannot be loaded: importing hostile_destinations.keyerror_at_import raised "
        "KeyError('HOSTILE_HOME') at ",
    ),
    "exits": (
        "hostile_destinations.exits_at_import:Adapter",
        "cannot be loaded: importing hostile_destinations.exits_at_import raised SystemExit(0)",
    ),
    "nocolon": ("hostile_destinations.cases", "its entry point names no class"),
    "missing": (
        "hostile_destinations.cases:Missing",
        "hostile_destinations.cases defines no Missing",
    ),
    "notype": ("hostile_destinations.cases:NoType", "declares no type: set type = 'notype'"),
    "othertype": (
        "hostile_destinations.cases:OtherType",
        "declares type = 'something_else', but its entry point registers it as 'othertype'",
    ),
    "plainmodel": (
        "hostile_destinations.cases:PlainModel",
        "settings_model = PlainSettings is not a subclass of "
        "reverse_etl.destinations.DestinationSettings",
    ),
    "vtrue": (
        "hostile_destinations.cases:VTrue",
        "declares contract_version = True, which is not a version",
    ),
    "vfloat": (
        "hostile_destinations.cases:VFloat",
        "declares contract_version = 1.0, which is not a version",
    ),
    "batch0": ("hostile_destinations.cases:Batch0", "max_batch_size = 0: declare"),
    "badops": (
        "hostile_destinations.cases:BadOps",
        "operations lists 'merge', not among the SDK's (delete, insert, update, upsert)",
    ),
    "idempotentextra": (
        "hostile_destinations.cases:IdempotentExtra",
        "idempotent_operations lists 'insert', not among its operations (upsert)",
    ),
    "badidentity": (
        "hostile_destinations.cases:BadIdentity",
        "key_identity = 'casefold': declare \"exact\" or \"case_insensitive\"",
    ),
    "legacy": (
        "hostile_destinations.cases:Legacy",
        "declares no contract_version of its own: it inherits 1 from "
        "reverse_etl.destinations.webhook.adapter.WebhookDestination",
    ),
    "usestls": ("hostile_destinations.cases:UsesTls", "defines uses_tls, which 0.4 no longer"),
    "badaddress": (
        "hostile_destinations.cases:BadAddress",
        "address(settings) answered None, where the contract asks for a str",
    ),
}


def plugin_source(folder: Path) -> Path:
    """The hostile plugin's source: a package with a working type and every broken one."""
    package = folder / "src" / "hostile_destinations"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text(GOOD)
    (package / "cases.py").write_text(CASES)
    # a plugin reading its configuration at import time, from a variable that is not set
    (package / "keyerror_at_import.py").write_text('import os\nHOME = os.environ["HOSTILE_HOME"]\n')
    (package / "exits_at_import.py").write_text("import sys\nsys.exit(0)\n")
    entry_points = "\n".join(f'{name} = "{value}"' for name, (value, _) in BROKEN.items())
    (folder / "pyproject.toml").write_text(
        textwrap.dedent("""\
            [build-system]
            requires = ["hatchling>=1.21"]
            build-backend = "hatchling.build"

            [project]
            name = "hostile-destinations"
            version = "1.0"
            requires-python = ">=3.11"

            [project.entry-points."reverse_etl.destinations"]
            good = "hostile_destinations.good:Good"
            """)
        + entry_points
        + '\n\n[tool.hatch.build.targets.wheel]\npackages = ["src/hostile_destinations"]\n'
    )
    return folder


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("hostile")
    return install(plugin_source(root / "source"), root / "site-packages")


def errors_by_file(stderr: str) -> dict[str, str]:
    """Each `error: destinations/<name>.toml:<line>: ...` line of stderr, by its file:line."""
    found = {}
    for line in stderr.splitlines():
        where, _, message = line.removeprefix("error: ").partition(": ")
        found[where] = message
    return found


# -- installed for real: the CLI as users run it ----------------------------------------------


def test_validate_reports_each_broken_plugin_type_on_its_files_type_line(
    project, hostile, receiver
):
    project.warehouse("create table people as select 1 as id")
    for name in [*BROKEN, "good"]:
        project.destination(name, f'type = "{name}"')
        project.sync(name, {"destination": name, "primary_key": "id"}, "select id from people")
    project.webhook("hook", receiver.url)
    project.sync("hooked", {"destination": "hook", "primary_key": "id"}, "select id from people")
    outcome = project.command("validate", env=hostile.env)
    assert outcome.exit_code == 2, outcome
    assert "Traceback" not in outcome.stderr, outcome.stderr
    reported = errors_by_file(outcome.stderr)
    assert set(reported) == {f"destinations/{name}.toml:1" for name in BROKEN}, outcome.stderr
    for name, (value, told) in BROKEN.items():
        message = reported[f"destinations/{name}.toml:1"]
        assert message.startswith(f"destination type {name!r} ({value}, from {PACKAGE} 1.0)")
        assert told in message, message
        assert "install a release of" in message.lower(), message  # what a user does
        assert "unknown destination type" not in message
    # the plugin's KeyError is its own, said with where it was raised
    assert "keyerror_at_import.py:2" in reported["destinations/keyerror.toml:1"]
    # the 0.3 subclass: refused for its inherited version, and told what 0.4 calls its method
    legacy = reported["destinations/legacy.toml:1"]
    assert "defines key_identity as a method" in legacy and "key_identity_for" in legacy
    # the types that work are not reported, and still run: the plugin's and a built-in
    ran = project.command("run", "good", "hooked", "--json", env=hostile.env)
    assert ran.exit_code == 0, ran
    assert {r["sync"]: r["delivered"] for r in ran.json_lines()} == {"good": 1, "hooked": 1}
    assert len(receiver.requests) == 1


def test_a_plugin_that_exits_at_import_is_reported_by_destinations(project, hostile):
    outcome = project.command("destinations", "--json", env=hostile.env)
    assert outcome.exit_code == 2, outcome  # it was 0, printing nothing
    listed = {item["type"] for item in outcome.json_lines()}
    assert {"good", "webhook", "hubspot", "postgres"} <= listed
    # every broken type but the one whose fault shows only with a file's settings (address)
    assert listed & set(BROKEN) == {"badaddress"}
    said = [line for line in outcome.stderr.splitlines() if line.startswith("error: ")]
    assert len(said) == len(BROKEN) - 1, outcome.stderr
    assert any("raised SystemExit(0)" in line for line in said), outcome.stderr
    assert "Traceback" not in outcome.stderr


def test_a_type_refused_at_validation_is_refused_by_run_and_plan(project, hostile, receiver):
    """What validate refuses never reaches a run: the 0.3 subclass of the webhook would compare
    its emails exactly where its receiver ignores case."""
    project.warehouse(
        "create table people as select * from (values ('Ann@x.com'), ('ann@x.com')) t(email)"
    )
    project.destination("legacy", f'type = "legacy"\nurl = "{receiver.url}"')
    project.destination("badaddress", 'type = "badaddress"')
    for name in ("legacy", "badaddress"):
        header = {"destination": name, "primary_key": "email"}
        project.sync(name, header, "select email from people")
        for command in ("run", "plan"):
            outcome = project.command(command, name, env=hostile.env)
            assert outcome.exit_code == 2, outcome
            assert f"destinations/{name}.toml:1: destination type {name!r}" in outcome.stderr
            assert "Traceback" not in outcome.stderr, outcome.stderr
    assert receiver.requests == []


# -- registered in this process (a dist-info folder on sys.path) ------------------------------


Register = Callable[..., None]


@pytest.fixture
def register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Register]:
    """register(source, name="module:Class", ...): the module `acme_adapters` with `source`, and
    an entry point for each type, from the package `acme-adapters 2.0`."""
    site = tmp_path / "site"

    def write(source: str, **types: str) -> None:
        site.mkdir()
        (site / "acme_adapters.py").write_text(textwrap.dedent(source))
        info = site / "acme_adapters-2.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-adapters\nVersion: 2.0\n")
        lines = [f"{name} = {value}" for name, value in types.items()]
        (info / "entry_points.txt").write_text("[reverse_etl.destinations]\n" + "\n".join(lines))
        monkeypatch.syspath_prepend(str(site))
        importlib.invalidate_caches()
        registry._targets.cache_clear()

    yield write
    sys.modules.pop("acme_adapters", None)
    registry._targets.cache_clear()


ACME = "destination type 'acme' (acme_adapters:Acme, from acme-adapters 2.0)"
ADAPTER = """
from reverse_etl.destinations import DELIVERED, Destination


class Acme(Destination):
    contract_version = 1
    type = "acme"

    async def send(self, batch):
        return [DELIVERED] * len(batch.records)
"""


def test_a_plugins_own_key_error_is_not_an_unknown_type(register):
    register("import os\nos.environ['ACME_HOME_NOT_SET']\n", acme="acme_adapters:Acme")
    with pytest.raises(registry.AdapterFailed) as failed:
        registry.adapter_class("acme")
    assert not isinstance(failed.value, KeyError)
    assert "raised KeyError('ACME_HOME_NOT_SET')" in str(failed.value)
    assert "acme_adapters.py:2" in str(failed.value) and "acme-adapters" in str(failed.value)
    with pytest.raises(registry.UnknownDestinationType) as unknown:
        registry.adapter_class("acmee")
    assert isinstance(unknown.value, KeyError)  # as 0.3's adapter_class raised
    assert str(unknown.value) == "unknown destination type 'acmee'"


@pytest.mark.parametrize(
    "statement, raised",
    [
        ("raise SystemExit(3)", "SystemExit(3)"),
        ("raise GeneratorExit()", "GeneratorExit()"),
        ("import asyncio; raise asyncio.CancelledError()", "CancelledError()"),
        ("raise RecursionError('deep')", "RecursionError('deep')"),
    ],
)
def test_any_exception_at_import_is_the_plugins_failure(register, statement, raised):
    register(statement, acme="acme_adapters:Acme")
    with pytest.raises(registry.AdapterFailed) as failed:
        registry.adapter_class("acme")
    assert f"importing acme_adapters raised {raised} at " in str(failed.value)


def test_a_ctrl_c_while_a_plugin_imports_still_stops_the_command(register):
    register("raise KeyboardInterrupt", acme="acme_adapters:Acme")
    with pytest.raises(KeyboardInterrupt):
        registry.adapter_class("acme")


def test_validate_says_a_plugins_failure_on_the_type_line(project, register):
    register("import os\nos.environ['ACME_HOME_NOT_SET']\n", acme="acme_adapters:Acme")
    project.destination("crm", 'batch_size = 10\ntype = "acme"')
    outcome = project.cli("validate")
    assert outcome.exit_code == 2
    message = errors_by_file(outcome.stderr)["destinations/crm.toml:2"]
    assert message.startswith(ACME)
    assert "raised KeyError('ACME_HOME_NOT_SET')" in message and "did you mean" not in message


DECLARED = {  # a line added to Acme's class body: what its error says
    "max_batch_size = 2.5": "max_batch_size = 2.5: declare",
    "max_batch_size = True": "max_batch_size = True: declare",
    'max_batch_size = "20"': "max_batch_size = '20': declare",
    'operations = frozenset()': "lists no operations",
    'operations = "upsert"': "operations = 'upsert': declare a frozenset of operation names",
    'reconcilable_operations = frozenset({"insert"})': "does not implement reconcile(batch)",
    'reconcilable_operations = frozenset({"merge"})': "reconcilable_operations lists 'merge'",
    "key_identity = None": "key_identity = None: declare",
    "speaks_http = 'no'": "speaks_http = 'no': declare True or False",
    "description = None": "description = None is not a str",
    "type = 7": "declares type = 7, but its entry point registers it as 'acme'",
    "contract_version = 0": "is written for contract version 0",
    "del send": "does not implement send",
}


@pytest.mark.parametrize("line", sorted(DECLARED))
def test_every_declaration_is_checked_when_the_type_is_loaded(register, line):
    if line == "del send":
        source = ADAPTER.replace("async def send", "async def sent")
    else:
        source = ADAPTER.replace('    type = "acme"\n', f'    type = "acme"\n    {line}\n')
    register(source, acme="acme_adapters:Acme")
    with pytest.raises(registry.IncompatibleAdapter) as refused:
        registry.adapter_class("acme")
    message = str(refused.value)
    assert message.startswith(ACME)
    assert DECLARED[line] in message
    assert "install a release of acme-adapters" in message.lower()


def test_the_settings_models_defaults_follow_the_rules_of_a_file(register):
    source = ADAPTER.replace(
        "class Acme(",
        "class Settings(DestinationSettings):\n"
        "    batch_size: int = 0\n"
        "    requests_per_second: float | None = -1\n\n\n"
        "class Acme(",
    ).replace("import DELIVERED,", "import DELIVERED, DestinationSettings,")
    declared = '    type = "acme"\n    settings_model = Settings\n'
    source = source.replace('    type = "acme"\n', declared)
    register(source, acme="acme_adapters:Acme")
    with pytest.raises(registry.IncompatibleAdapter) as refused:
        registry.adapter_class("acme")
    message = str(refused.value)
    assert (
        "the default of batch_size in settings_model Settings is 0, which a destination file "
        "could not set (Input should be greater than or equal to 1)"
    ) in message
    assert "the default of requests_per_second in settings_model Settings is -1" in message


def test_adapters_that_keep_the_contract_load(register):
    """The built-in types; a version declared on a base class of the plugin's own package; a
    0.4 subclass of a built-in that declares its version itself; a method of its own named
    pace; declarations left at the SDK's defaults."""
    source = ADAPTER + textwrap.dedent('''
        from reverse_etl.destinations.webhook import WebhookDestination


        class OwnBase(Destination):
            contract_version = 1


        class Derived(OwnBase):
            type = "derived"
            operations = frozenset({"upsert"})  # the default idempotent_operations name more

            async def send(self, batch):
                await self.pace()
                return [DELIVERED] * len(batch.records)

            async def pace(self):
                pass


        class Webhook2(WebhookDestination):
            contract_version = 1
            type = "webhook2"
            key_identity = "case_insensitive"
    ''')
    classes = {"acme": "Acme", "derived": "Derived", "webhook2": "Webhook2"}
    register(source, **{name: f"acme_adapters:{cls}" for name, cls in classes.items()})
    for name in [*registry.BUILTIN, "acme", "derived", "webhook2"]:
        assert registry.adapter_class(name).type == name


def test_a_legacy_subclass_is_told_what_0_4_calls_each_thing_it_still_uses(register):
    register(
        """
        from reverse_etl.destinations.webhook import WebhookDestination


        class Legacy(WebhookDestination):
            type = "legacy"

            @classmethod
            def key_identity(cls, settings, sync):
                return "case_insensitive"

            @classmethod
            def uses_tls(cls, settings):
                return True

            async def send(self, batch):
                await self.pace()
                return await super().send(batch)
        """,
        legacy="acme_adapters:Legacy",
    )
    with pytest.raises(registry.IncompatibleAdapter) as refused:
        registry.adapter_class("legacy")
    message = str(refused.value)
    assert "declares no contract_version of its own: it inherits 1 from" in message
    assert "name the method key_identity_for(settings, sync)" in message
    assert "the engine derives TLS from address(settings)" in message
    assert "What moved in 0.4" in message


HOOKS = """
from reverse_etl.destinations import DELIVERED, Destination


class Acme(Destination):
    contract_version = 1
    type = "acme"

    async def send(self, batch):
        return [DELIVERED] * len(batch.records)

    @classmethod
    def HOOK
"""


@pytest.mark.parametrize(
    "hook, file, told",
    [
        (
            "address(cls, settings):\n        return 42",
            "destinations/crm.toml:1",
            "address(settings) answered 42, where the contract asks for a str",
        ),
        (
            "address(cls, settings):\n        raise KeyError('url')",
            "destinations/crm.toml:1",
            "address(settings) raised KeyError('url') at ",
        ),
        (
            "key_identity_for(cls, settings, sync):\n        return 'CASE'",
            "syncs/people.sql:1",
            "key_identity_for(settings, sync) answered 'CASE', where the contract asks for "
            '"exact" or "case_insensitive"',
        ),
        (
            "sync_problems(cls, settings, sync):\n        return ['mode']",
            "syncs/people.sql:1",
            "sync_problems(settings, sync) answered ['mode'], where the contract asks for a "
            "list of (header key, message) pairs",
        ),
        (
            "sync_problems(cls, settings, sync):\n        return None",
            "syncs/people.sql:1",
            "sync_problems(settings, sync) raised TypeError(",
        ),
    ],
)
def test_a_hooks_answer_is_checked_where_validation_calls_it(project, register, hook, file, told):
    """The hooks a run would call to compute a sync's target and diff: validation calls them,
    and says on the right line what a run would have crashed on."""
    register(HOOKS.replace("HOOK", hook), acme="acme_adapters:Acme")
    project.warehouse("create table people as select 1 as id")
    project.destination("crm", 'type = "acme"')
    project.sync("people", {"destination": "crm", "primary_key": "id"}, "select id from people")
    outcome = project.cli("validate")
    assert outcome.exit_code == 2
    message = errors_by_file(outcome.stderr)[file]
    assert message.startswith(ACME)
    assert told in message, message
    assert "acme-adapters" in message.partition(told)[2]  # what to do names the package


def test_a_settings_models_own_failure_is_the_plugins(project, register):
    register(
        """
        from pydantic import field_validator
        from reverse_etl.destinations import DELIVERED, Destination, DestinationSettings


        class Settings(DestinationSettings):
            region: str = "eu"

            @field_validator("region")
            @classmethod
            def _region(cls, value):
                return {"eu": "eu-1"}[value]


        class Acme(Destination):
            contract_version = 1
            type = "acme"
            settings_model = Settings

            async def send(self, batch):
                return [DELIVERED] * len(batch.records)
        """,
        acme="acme_adapters:Acme",
    )
    project.destination("crm", 'type = "acme"\nregion = "us"')
    outcome = project.cli("validate")
    assert outcome.exit_code == 2
    message = errors_by_file(outcome.stderr)["destinations/crm.toml:1"]
    assert "its settings model raised KeyError('us')" in message
    project.destination("crm", 'type = "acme"\nregion = 3')  # the file's mistake: its line
    mistake = errors_by_file(project.cli("validate").stderr)
    assert "destinations/crm.toml:2" in mistake and "region" in mistake["destinations/crm.toml:2"]


# -- 0.3's names in the packages that kept their name -----------------------------------------

PACKAGES = {  # the package, the module beside it that holds 0.3's code, 0.3 names to find
    "reverse_etl.project": ("loader", ["SYNCS_DIR", "DESTINATIONS_DIR", "Mode"]),
    "reverse_etl.cli": ("commands", ["Context", "run_command", "validate_command", "command"]),
    "reverse_etl.daemon": ("service", ["log"]),
    "reverse_etl.destinations.webhook": ("adapter", ["encode_batch"]),
    "reverse_etl.destinations.hubspot": ("adapter", ["properties", "KeyIndex", "MAX_INPUTS"]),
    "reverse_etl.destinations.salesforce": ("adapter", ["API_NAME", "MAX_RECORDS", "USAGE"]),
    "reverse_etl.destinations.braze": ("adapter", ["TRACK_LIMIT", "KEY_COLUMN", "describe"]),
    "reverse_etl.destinations.postgres": ("adapter", []),
}


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_a_0_3_name_of_a_package_that_kept_its_name_still_imports(package):
    module = importlib.import_module(package)
    implementation = importlib.import_module(f"{package}.{PACKAGES[package][0]}")
    own = {name for name in vars(module) if not name.startswith("_")}
    forwarded = [
        name
        for name, value in vars(implementation).items()
        if not name.startswith("__") and name not in own and not inspect.ismodule(value)
    ]
    assert set(PACKAGES[package][1]) <= set(forwarded)
    for name in forwarded:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = getattr(module, name)
        assert found is vars(implementation)[name]
        [warning] = caught
        assert warning.category is DeprecationWarning and warning.filename == __file__
        assert f"{package}.{name} is reverse_etl." in str(warning.message)
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018
    star: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(f"from {package} import *", star)
    assert sorted(set(star) - {"__builtins__"}) == sorted(module.__all__)


def test_a_0_3_name_warns_once_per_import_and_names_where_it_lives():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from reverse_etl.destinations.webhook import encode_batch  # noqa: F401
        from reverse_etl.project import Problem as Old
    assert Old is Problem
    assert [str(w.message) for w in caught] == [
        "reverse_etl.destinations.webhook.encode_batch is "
        "reverse_etl.destinations.webhook.adapter.encode_batch since reverse-etl 0.4; the old "
        "path goes in 0.5",
        "reverse_etl.project.Problem is reverse_etl.errors.Problem since reverse-etl 0.4; the "
        "old path goes in 0.5",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a submodule is no 0.3 name: no warning
        from reverse_etl.cli import output  # noqa: F401
        from reverse_etl.destinations.postgres import pool  # noqa: F401


# -- errors that travel between processes ------------------------------------------------------


def every_error() -> list[BaseException]:
    made: list[BaseException] = []
    for _, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, BaseException) and cls.__module__ == errors.__name__:
            if cls is ProjectError:
                problems = [Problem("syncs/a.sql", 3, "unknown destination 'x'")]
                made.append(cls(problems + [Problem("destinations/x.toml", None, "bad")]))
            else:
                made.append(cls("the destination said no"))
    made += [
        registry.UnknownDestinationType("acme"),
        registry.AdapterFailed("importing it raised KeyError('x')"),
        registry.IncompatibleAdapter("is written for contract version 2"),
    ]
    return made


@pytest.mark.parametrize("error", every_error(), ids=lambda e: type(e).__name__)
def test_every_error_comes_back_from_pickle_as_it_went(error):
    error.add_note("a note")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert str(back) == str(error) and back.args == error.args
    assert vars(back) == vars(error)  # ProjectError's problems, the note
    if isinstance(error, ProjectError):
        assert str(back).splitlines()[0] == "syncs/a.sql:3: unknown destination 'x'"


# -- the hooks' checks, on the classes the loader gives them -----------------------------------


def test_the_hooks_of_the_built_in_types_answer_within_the_contract():
    from reverse_etl.destinations.webhook import WebhookSettings

    settings = WebhookSettings(type="webhook", url="https://example.com/in")
    target = SyncTarget(None, "upsert", ("id",))
    assert registry.address_of(WebhookDestination, settings) == "https://example.com/in"
    assert registry.key_identity_of(WebhookDestination, settings, target) == "exact"
    assert registry.sync_problems_of(WebhookDestination, settings, target) == []
    assert issubclass(registry.adapter_class("webhook"), Destination)

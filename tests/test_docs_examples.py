"""The destination plugin of docs/writing-a-destination.md, as a reader would copy it: every
code block that starts with a file name (`# acme_reverse_etl.py`, `# tests/acme_fake.py`,
`# pyproject.toml (the plugin's)`, ...) written to that file, the package installed, and its
tests run: the page's adapter passes the contract suite against the page's fake."""

from __future__ import annotations

import re
from pathlib import Path

from test_plugin_example import install, run

PAGE = Path(__file__).parent.parent / "docs" / "writing-a-destination.md"
BLOCK = re.compile(r"```(?:python|toml)\n# (\S+)[^\n]*\n(.*?)```", re.S)


def test_the_pages_plugin_passes_the_contract_suite(tmp_path):
    source = tmp_path / "acme"
    files = {}
    for name, code in BLOCK.findall(PAGE.read_text()):
        files[name] = code
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(code)
    expected = {"acme_reverse_etl.py", "pyproject.toml", "tests/acme_fake.py"}
    assert expected | {"tests/conftest.py", "tests/test_acme.py"} <= set(files), sorted(files)
    plugin = install(source, tmp_path / "site-packages")
    outcome = run(plugin, "-m", "pytest", "-p", "no:cacheprovider", "-v", "tests")
    report = outcome.stdout + outcome.stderr
    assert outcome.returncode == 0, report
    assert re.search(r"=+ \d+ passed, \d+ skipped in", report), report  # deletes: skipped
    assert "test_a_bad_record_is_rejected_alone_with_the_vendors_message PASSED" in report

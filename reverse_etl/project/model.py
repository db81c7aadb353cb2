"""A sync's model: exactly one read-only query, parsed with sqlglot."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ErrorLevel, ParseError, SqlglotError, TokenError, UnsupportedError
from sqlglot.tokens import TokenType

from ..errors import Problem

# Nodes that write or change something, wherever they appear (a CTE included).
_WRITES: tuple[type[exp.Expression], ...] = tuple(
    getattr(exp, name)
    for name in (
        "Insert",
        "Update",
        "Delete",
        "Merge",
        "Create",
        "Drop",
        "Alter",
        "Command",
        "Into",
        "Copy",
        "Pragma",
        "Set",
        "Use",
        "TruncateTable",
        "Attach",
        "Detach",
    )
    if hasattr(exp, name)
)


@dataclass(frozen=True)
class Model:
    tree: exp.Query
    sql: str  # what runs in the warehouse: the file's SQL, or its transpilation
    source: str = ""  # the file's SQL, when `sql` is a transpilation of it
    dialect: str = ""  # the dialect the file's SQL is written in, when transpiled

    @property
    def transpiled(self) -> bool:
        return bool(self.source)

    @property
    def named_columns(self) -> list[str] | None:
        """Output column names when sqlglot can tell them alone (no `*`, every column named)."""
        if any(isinstance(s, exp.Star) or s.is_star for s in self.tree.selects):
            return None
        names = self.tree.named_selects
        return names if len(names) == len(self.tree.selects) and all(names) else None

    def line_of(self, name: str) -> int | None:
        """The line (1 = the model's first line) where the identifier `name` (a table, column
        or function the warehouse complained about) first appears, else None."""
        wanted = name.strip('"').lower()
        lines = [
            node.meta["line"]
            for node in self.tree.walk()
            if isinstance(node, exp.Identifier)
            and node.name.lower() == wanted
            and "line" in node.meta
        ]
        if lines:
            return min(lines)
        word = re.compile(rf"(?<![\w.]){re.escape(wanted)}(?!\w)", re.IGNORECASE)
        for number, line in enumerate((self.source or self.sql).splitlines(), start=1):
            if word.search(line.split("--")[0]):
                return number
        return None


# sqlglot parses and writes SQL recursively: past Python's recursion limit it cannot.
_TOO_DEEP = (
    "the model is nested too deeply for the SQL parser (Python's recursion limit): "
    "flatten it, e.g. fewer levels of parentheses or of nested CASE and subqueries"
)


def parse_model(
    sql: str, dialect: str, file: str, first_line: int
) -> tuple[Model | None, list[Problem]]:
    """Parse and check a model; problems carry the file's line numbers."""
    try:
        return _parse_model(sql, dialect, file, first_line)
    except RecursionError:
        return None, [Problem(file, first_line, _TOO_DEEP)]


def _parse_model(
    sql: str, dialect: str, file: str, first_line: int
) -> tuple[Model | None, list[Problem]]:

    def problem(line: int | None, message: str) -> tuple[None, list[Problem]]:
        return None, [Problem(file, line, message)]

    def at(relative: int | None) -> int:
        return first_line + relative - 1 if relative else first_line

    if not sql.strip():
        return problem(first_line, "the model has no SQL after its header: write one SELECT query")
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except SqlglotError as exc:
        line, description = _syntax_error(exc, sql)
        return problem(at(line), f"SQL syntax error: {description}")
    if not statements:
        return problem(first_line, "the model has no SQL statement: write one SELECT query")
    if len(statements) != 1:
        return problem(
            at(_second_statement_line(sql, dialect)),
            f"a model must be exactly one query; found {len(statements)} statements "
            f"(remove the `;` and what follows it)",
        )
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        kind = tree.key.upper()
        return problem(first_line, f"a model must be a read-only query (SELECT); found {kind}")
    for node in tree.walk():
        if isinstance(node, _WRITES):
            kind = "SELECT ... INTO" if isinstance(node, exp.Into) else node.key.upper()
            return problem(
                at(_node_line(node)),
                f"a model must be read-only; it contains {kind}: keep only the SELECT",
            )
    return Model(tree, sql), []


def _syntax_error(exc: SqlglotError, sql: str) -> tuple[int | None, str]:
    """Where sqlglot's error is in `sql` (its line, 1 = the first; None: not known) and what
    it is, in words a model's author reads."""
    if isinstance(exc, ParseError):
        first = exc.errors[0] if exc.errors else {}
        description = first.get("description") or str(exc).split("\n")[0]
        incomplete = re.match(
            r"Required keyword: '\w+' missing for <class '(?:\w+\.)*(\w+)'>", description
        )
        if incomplete:
            description = f"incomplete {incomplete.group(1).upper()} expression"
        near = (first.get("highlight") or "").strip()
        if near:
            description += f", near {near!r}"
        return first.get("line"), description
    if isinstance(exc, TokenError):
        # sqlglot's cause says `Missing <delimiter> from <line>:<offset of the opening token>`
        found = re.search(r"Missing (.+?) from \d+:(\d+)", str(exc.__cause__ or exc))
        if found:
            line = sql[: int(found.group(2))].count("\n") + 1
            return line, f"{found.group(1)} is opened here and never closed"
        opened = sql.rfind("/*")
        if opened >= 0 and "*/" not in sql[opened:]:
            return sql[:opened].count("\n") + 1, "/* is opened here and never closed"
        return None, "the SQL cannot be read (is a quote or a /* comment left open?)"
    return None, str(exc).splitlines()[0]


def _node_line(node: exp.Expression) -> int | None:
    """The first line of an identifier inside `node` (sqlglot keeps positions on those)."""
    lines = [
        n.meta["line"] for n in node.walk() if isinstance(n, exp.Identifier) and "line" in n.meta
    ]
    return min(lines) if lines else None


def _second_statement_line(sql: str, dialect: str) -> int | None:
    """The line where the second statement begins."""
    try:
        tokens = Dialect.get_or_raise(dialect).tokenize(sql)
    except SqlglotError:
        return None
    after_semicolon = False
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            after_semicolon = True
        elif after_semicolon:
            return token.line
    return None


def transpile(
    model: Model, read: str, write: str, file: str, line: int
) -> tuple[Model | None, list[Problem]]:
    """The model written in `read`, rewritten for a warehouse speaking `write` (itself when the
    two are the same); a problem naming what `write` cannot express."""
    if Dialect.get_or_raise(read) == Dialect.get_or_raise(write):
        return model, []
    try:
        sql = model.tree.sql(dialect=write, pretty=True, unsupported_level=ErrorLevel.RAISE)
    except RecursionError:
        return None, [Problem(file, line, _TOO_DEEP)]
    except UnsupportedError as exc:
        reason = str(exc).strip().splitlines()[0]
        return None, [
            Problem(file, line, f"the model cannot be transpiled from {read} to {write}: {reason}")
        ]
    return Model(model.tree, sql, source=model.sql, dialect=read), []


def check_dialect(name: str) -> str:
    """`name` if sqlglot knows the dialect; ValueError listing those it knows otherwise."""
    try:
        Dialect.get_or_raise(name)
    except ValueError:
        from sqlglot.dialects import DIALECTS

        from .tomlfile import did_you_mean

        known = sorted(d.lower() for d in DIALECTS)
        raise ValueError(
            f"unknown SQL dialect {name!r}{did_you_mean(name, known)} "
            f"(dialects: {', '.join(known)})"
        ) from None
    return name


def column_name_problem(names: Sequence[str]) -> tuple[str, str] | None:
    """Why the model's output columns cannot be the fields sent, and the first name at fault:
    two of them are one name, or one name in different letter case (fields are JSON keys, and
    most destinations compare property names ignoring case). None when they can."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.lower(), []).append(name)
    clashes = [same for same in groups.values() if len(same) > 1]
    if not clashes:
        return None
    described = "; ".join(
        f"{same[0]!r} {len(same)} times" if len(set(same)) == 1 else " and ".join(map(repr, same))
        for same in clashes
    )
    return (
        f"the model's columns must have names of their own, not alike in letter case: "
        f"{described} (give all but one another name with AS)",
        clashes[0][0],
    )

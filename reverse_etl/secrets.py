"""Blanking secrets out of everything the engine shows or keeps: errors, logs, run history.

A destination echoes a token back in whatever encoding its answer uses, so each secret is
blanked in every spelling of it: as written; JSON-escaped (`\\/` for `/`, `\\u002b` for `+`,
escaped again inside JSON text); URL-encoded (`%2B`, `+` for a space); base64 (and base64 of
`user:password`, the HTTP Basic credentials of a URL's userinfo). Whatever the settings say,
the userinfo of a URL (`https://user:pass@host`) and the credentials of an `Authorization:
Bearer|Basic ...` header are blanked too: a token can reach a message before it is known as one.

    hide = blanker(project.secrets())   # compiled once
    hide(text)                          # for every message, log line, rejected record

What is secret: every `SecretStr` setting and the credentials of any URL in the settings
(secret_values), and each value a project file took from the environment (collected by
tomlfile.interpolate). The PostgreSQL destination blanks its dsn's secrets (blank_dsn).
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote

from pydantic import BaseModel, SecretStr

from .errors import Problem

REDACTED = "***"
MIN_LENGTH = 3  # shorter values would blank too much that is not secret
TOKEN_LIKE = 20  # a URL's user name alone is a secret only when this long (not `postgres`)
# A longer secret is matched in its whole spellings, not one character at a time: a pattern of
# every escape of every character compiles in time that grows faster than its length (64 KB: 24 s)
LONG = 256
CUT_PREFIX = 6  # a cut that leaves this much of a secret before its "..." is blanked

# scheme://userinfo@ : the userinfo, whatever it holds, where a URL is written
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#\"'<>]+@")
# A bearer token anywhere, and any credentials given as an Authorization header's value
_CREDENTIALS = re.compile(
    r"(?i)(\bbearer\s+|\bauthorization[\"']?\s*[:=]\s*[\"']?(?:basic|token|bearer)?\s*)"
    r"[A-Za-z0-9._~+/=%\\-]{6,}"
)


def _spellings(char: str) -> str:
    """A regex matching one character of a secret, in any of its escapes."""
    options = [re.escape(char)]
    code = ord(char)
    if code < 0x10000:  # JSON's \uXXXX (the backslash itself escaped again inside JSON text)
        options.append(rf"\\+u{code:04x}")
    if char in '/"\\':
        options.append(r"\\+" + re.escape(char))
    utf8 = char.encode()
    options.append("".join(f"%{byte:02x}" for byte in utf8))  # URL-encoded
    if char == " ":
        options.append(r"\+")
    return "(?:" + "|".join(options) + ")"


def _pattern(value: str) -> str:
    encoded = value.encode()
    if len(value) > LONG:  # a key file, a long JWT: its usual spellings, each as it is
        escaped = json.dumps(value)[1:-1]
        char_by_char = {
            re.escape(value),
            re.escape(escaped),
            re.escape(escaped.replace("/", "\\/")),
            re.escape(quote(value, safe="")),
            re.escape(quote_plus(value, safe="")),
        }
    else:
        char_by_char = {"".join(_spellings(c) for c in value)}
    spellings = {
        *char_by_char,
        re.escape(base64.b64encode(encoded).decode()),
        re.escape(base64.urlsafe_b64encode(encoded).decode()),
        re.escape(base64.b64encode(encoded).decode().rstrip("=")),
    }
    return "|".join(sorted(spellings, key=len, reverse=True))


def _prefilter(values: list[str], cuts: bool = False) -> Callable[[str], bool]:
    """A cheap test that every text holding a secret, in any spelling, or a URL's userinfo or
    credentials passes: letters and digits are written as they are by JSON and URL encoders,
    so each secret's longest run of them is in every spelling but the escaped ones (which
    `\\u` and `%` catch) and base64 (tested by its start). Compared in lower case."""
    anchors = {"://", "\\u", "%", "bearer", "authorization"}
    if cuts:  # a secret cut short may have lost its longest run: its start is searched too
        anchors |= {value[:CUT_PREFIX] for value in values if len(value) > CUT_PREFIX}
    for value in values:
        longest = max(re.findall(r"[A-Za-z0-9]+", value), key=len, default="")
        if len(longest) < 3:  # nothing to anchor on: every text is searched in full
            return lambda text: True
        encoded = value.encode()
        anchors |= {
            longest,
            base64.b64encode(encoded).decode()[:8],
            base64.urlsafe_b64encode(encoded).decode()[:8],
        }
    lowered = tuple(a.lower() for a in anchors)

    def suspect(text: str) -> bool:
        low = text.lower()
        return any(anchor in low for anchor in lowered)

    return suspect


def credentials_in(value: str) -> dict[str, str]:
    """The secrets a URL-like value carries in its userinfo: the password, and `user:password`
    (whose base64 is what HTTP Basic authentication sends); a user name alone only when it is
    as long as a token. (The userinfo of a URL in a text is blanked whatever it holds.)"""
    found: dict[str, str] = {}
    for match in re.finditer(r"(?i)([a-z][a-z0-9+.-]*)://([^\s@]+)@", value):
        scheme = match.group(1).lower()
        user, colon, password = match.group(2).partition(":")
        if colon and password:
            found[password] = found[unquote(password)] = REDACTED
            found[f"{unquote(user)}:{unquote(password)}"] = REDACTED
            found.update(dict.fromkeys(_unencoded_pieces(password), REDACTED))
        elif scheme in ("http", "https") and len(user) >= TOKEN_LIKE and "/" not in user:
            # a token as the user (https://TOKEN@): over HTTP only, since a database's user
            # name is no secret, and advice naming it (GRANT ... TO role) must stay readable
            found[unquote(user)] = REDACTED
    return found


def _unencoded_pieces(password: str) -> list[str]:
    """A password whose `/` was left unencoded (`pa55/word`) is cut there by URL parsers,
    which then name its first piece (as a port, say): each piece is a secret too. Not when it
    reads as a port and a path (`host:8080/x@y`) or holds a query (`?`, `#`)."""
    pieces = password.split("/")
    if len(pieces) < 2 or "?" in password or "#" in password or pieces[0].isdigit():
        return []
    return [piece for piece in pieces if len(piece) >= MIN_LENGTH]


def with_credentials(secrets: Mapping[str, str]) -> dict[str, str]:
    """`secrets` and what the URLs among them carry (see credentials_in)."""
    found = dict(secrets)
    for value in list(secrets):
        for extra, shown in credentials_in(value).items():
            found.setdefault(extra, shown)
    return found


def blanker(secrets: Mapping[str, str]) -> Callable[[str], str]:
    """A function that replaces each secret (a key of `secrets`, 3 characters or more), in any
    of its spellings, by what `secrets` gives for it ("***", or the `${NAME}` it came from),
    and blanks URL userinfo and Authorization credentials. Compiled once: build it once, call
    it for every text."""
    shown = with_credentials(secrets)
    values = sorted((v for v in shown if len(v) >= MIN_LENGTH), key=len, reverse=True)
    groups = {f"s{i}": value for i, value in enumerate(values)}
    known = (
        re.compile("|".join(f"(?P<{g}>{_pattern(v)})" for g, v in groups.items()), re.IGNORECASE)
        if groups
        else None
    )

    cut = _cut_pattern(values)
    suspect = _prefilter(values, cut is not None)

    def hide(text: str) -> str:
        if not text or not suspect(text):
            return text
        if known is not None:
            text = known.sub(lambda m: shown[groups[m.lastgroup or ""]], text)
        if cut is not None:
            text = cut.sub(REDACTED, text)
        text = _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
        return _CREDENTIALS.sub(lambda m: m.group(1) + REDACTED, text)

    return hide


def _cut_pattern(values: list[str]) -> re.Pattern[str] | None:
    """The start of a secret where a text was cut short (an answer or a value shown up to a
    length, then "..."): its first CUT_PREFIX characters or more, up to the mark, blanked
    whole, since the cut fell inside it."""
    starts = []
    for value in values:
        if len(value) <= CUT_PREFIX:
            continue
        if len(value) > LONG:  # its start, then whatever of it the text kept
            starts.append(re.escape(value[:CUT_PREFIX]) + r"[^\s'\"]*?")
            continue
        rest = value[CUT_PREFIX:]
        nested = ""  # the rest of the value, each further character optional
        for char in reversed(rest):
            nested = f"(?:{re.escape(char)}{nested})?"
        starts.append(re.escape(value[:CUT_PREFIX]) + nested)
    if not starts:
        return None
    return re.compile(f"(?:{'|'.join(starts)})(?=\\.\\.\\.|\u2026)")


def blank(text: str, secrets: Mapping[str, str]) -> str:
    """`text` with every secret blanked (see blanker); for many texts, build a blanker once."""
    return blanker(secrets)(text)


def blank_problems(problems: list[Problem], secrets: Mapping[str, str]) -> list[Problem]:
    """The problems with every secret in their messages blanked (a value taken from the
    environment shown as its ${NAME}): secret values never appear in errors."""
    if not secrets:
        return problems
    hide = blanker(secrets)
    return [Problem(p.file, p.line, hide(p.message)) for p in problems]


def secret_values(models: list[BaseModel]) -> dict[str, str]:
    """Every SecretStr value inside these settings (in dicts and lists too), and the
    credentials in the userinfo of any URL among them (`https://user:pass@host`), to blank
    out (see blanker)."""
    found: dict[str, str] = {}

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            if secret := value.get_secret_value():
                found[secret] = REDACTED
                found.update(credentials_in(secret))
        elif isinstance(value, str):
            found.update(credentials_in(value))
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    for model in models:
        walk(model)
    return found


def blank_dsn(message: str, dsn: str) -> str:
    """`message` without a PostgreSQL connection string, its password (of a URL's userinfo,
    or `password=`) or $PGPASSWORD, each replaced where written as it is (libpq does not echo
    them, but a malformed dsn's fragments could be quoted)."""
    secrets = [dsn, os.environ.get("PGPASSWORD", "")]
    match = re.search(r"://[^:/@]*:([^@/]*)@", dsn) or re.search(
        r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn
    )
    if match:
        secrets.append(match.group(1).strip("'"))
    for secret in secrets:
        if len(secret) >= MIN_LENGTH:
            message = message.replace(secret, REDACTED)
    return message

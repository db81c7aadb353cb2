"""`after` between syncs: which sync runs after which, and the mistakes that would stop a chain
from ever starting (a name that is no sync, a cycle)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import Problem
from .tomlfile import did_you_mean

if TYPE_CHECKING:
    from .loader import Sync


def after_problems(syncs: Iterable[Sync], names: list[str]) -> list[Problem]:
    """Unknown names in `after` lists, and each cycle, reported in every file on it."""
    syncs = list(syncs)
    problems = []
    for sync in syncs:
        for upstream in sync.header.after:
            if upstream not in names:
                problems.append(
                    Problem(
                        sync.file,
                        sync.header_line("after"),
                        f"after: there is no sync named {upstream!r}"
                        f"{did_you_mean(upstream, names)} (syncs: {', '.join(names) or 'none'})",
                    )
                )
    by_name = {sync.name: sync for sync in syncs}
    for cycle in _cycles({s.name: [u for u in s.header.after if u in by_name] for s in syncs}):
        path = " after ".join([*cycle, cycle[0]])
        for name in cycle:
            sync = by_name[name]
            problems.append(
                Problem(
                    sync.file,
                    sync.header_line("after"),
                    f"after: {path} is a cycle: none of these syncs would ever run; "
                    f"remove one of the links",
                )
            )
    return problems


def downstream(syncs: Iterable[Sync]) -> dict[str, list[str]]:
    """For each sync, the syncs that run after it."""
    followers: dict[str, list[str]] = {}
    for sync in syncs:
        for upstream in sync.header.after:
            followers.setdefault(upstream, []).append(sync.name)
    return followers


def _cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """Each cycle once (a strongly connected part of more than one sync, or a sync that names
    itself), its members in the order the links go, starting from the first in name order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    parts: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; projects are small, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, []):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                part.append(member)
                if member == node:
                    break
            if len(part) > 1 or node in edges.get(node, []):
                parts.append(_in_link_order(sorted(part), edges))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(parts)


def _in_link_order(members: list[str], edges: dict[str, list[str]]) -> list[str]:
    """A cycle through the first member, inside the strongly connected part, as a list of
    syncs each naming the next (the last names the first)."""
    inside, start = set(members), members[0]

    def walk(path: list[str]) -> list[str] | None:
        for nxt in edges[path[-1]]:
            if nxt == start:
                return path
            if nxt in inside and nxt not in path and (found := walk([*path, nxt])):
                return found
        return None

    return walk([start]) or members

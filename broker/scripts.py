"""Every Lua script embedq runs: one file each in lua/, whose header names its KEYS, its ARGV and what
it returns (BullMQ's src/commands/*.lua), read once. `bind` gives a callable for one script on one
connection, sync or asyncio (redis-py's Script: EVALSHA, and SCRIPT LOAD once on NOSCRIPT); every call
is checked against the header's key and argument counts, so a caller and its script cannot drift apart.

Header lines (inside the leading `--[[ ... ]]` block):
    KEYS[1]   name     what it is          one key
    KEYS[6..] name     what they are       any number more (per lane, per job ...)
    ARGV[1]   name     what it is          likewise for arguments
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from hashlib import sha1
from importlib import resources
from typing import Any, Protocol

from redis import Redis
from redis.exceptions import NoScriptError

from embedq.broker.direct import execute

HEADER_LINE = re.compile(r"^\s*(KEYS|ARGV)\[(\d+)(\.\.)?\]\s+(\w+)", re.MULTILINE)


class ScriptCallError(TypeError):
    """A script was called with other key or argument counts than its header declares: a bug in embedq."""


class Connection(Protocol):
    def register_script(self, script: str) -> Any: ...


@dataclass(frozen=True)
class LuaScript:
    name: str
    source: str
    keys: tuple[str, ...]  # the fixed keys' names, in order
    argv: tuple[str, ...]
    more_keys: bool  # the header ends its keys with a `KEYS[n..]` line
    more_argv: bool

    @property
    def sha(self) -> str:
        return sha1(self.source.encode()).hexdigest()

    def check(self, keys: Sequence[Any], args: Sequence[Any]) -> None:
        for kind, given, declared, more in (
            ("keys", len(keys), len(self.keys), self.more_keys),
            ("arguments", len(args), len(self.argv), self.more_argv),
        ):
            if given < declared or (given > declared and not more):
                expected = f"at least {declared}" if more else str(declared)
                raise ScriptCallError(f"script {self.name} takes {expected} {kind}, was given {given}")


def header(name: str, source: str) -> LuaScript:
    """The script with what its header declares; ValueError if the header is missing or out of order."""
    if not source.startswith("--[["):
        raise ValueError(f"script {name} has no --[[ header ]]")
    block = source[: source.index("]]")]
    declared: dict[str, list[tuple[str, bool]]] = {"KEYS": [], "ARGV": []}
    for kind, number, more, label in HEADER_LINE.findall(block):
        entries = declared[kind]
        if int(number) != len(entries) + 1 or (entries and entries[-1][1]):
            raise ValueError(f"script {name}: {kind}[{number}] is out of order in its header")
        entries.append((label, bool(more)))
    keys, argv = declared["KEYS"], declared["ARGV"]
    return LuaScript(
        name,
        source,
        tuple(label for label, more in keys if not more),
        tuple(label for label, more in argv if not more),
        bool(keys) and keys[-1][1],
        bool(argv) and argv[-1][1],
    )


@cache
def load(name: str) -> LuaScript:
    """lua/{name}.lua, read and checked once per process."""
    source = resources.files("embedq.broker").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    return header(name, source)


def names() -> list[str]:
    """Every script's name."""
    folder = resources.files("embedq.broker").joinpath("lua")
    return sorted(item.name.removesuffix(".lua") for item in folder.iterdir() if item.name.endswith(".lua"))


def by_sha(sha: str) -> LuaScript:
    """The script whose source has this SHA1 (what EVALSHA names)."""
    return next(script for script in map(load, names()) if script.sha == sha)


def bind(connection: Connection, name: str) -> Any:
    """`call(keys, args)` running script `name` on `connection`: its reply, or (asyncio) an awaitable of it.
    On a sync client the call goes by broker.direct (EVALSHA; on NOSCRIPT, SCRIPT LOAD and once more)."""
    script = load(name)
    if isinstance(connection, Redis):
        return lambda keys, args: _call_direct(connection, script, keys, args)
    registered = connection.register_script(script.source)

    def call(keys: Sequence[Any], args: Sequence[Any]) -> Any:
        script.check(keys, args)
        return registered(keys=list(keys), args=list(args))

    return call


def _call_direct(connection: Redis, script: LuaScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    script.check(keys, args)
    command: tuple[tuple[Any, ...], dict[str, Any]] = (("EVALSHA", script.sha, len(keys), *keys, *args), {})
    (reply,) = execute(connection, [command])
    if isinstance(reply, NoScriptError):  # Redis lost its scripts (a restart, SCRIPT FLUSH)
        connection.script_load(script.source)
        (reply,) = execute(connection, [command])
    if isinstance(reply, Exception):
        raise reply
    return reply

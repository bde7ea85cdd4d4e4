"""Every Lua script is a file with a header that names its KEYS and ARGV: the header matches the body
(no index used that it does not declare, none declared that goes unused), no key name is spelled
inside Lua, each script compiles in a real Redis, and a call with other counts than the header's is
refused before it reaches Redis."""

from __future__ import annotations

import re

import pytest
from redis import Redis

from embedq.broker.scripts import ScriptCallError, bind, header, load, names

BODY_INDEX = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")


@pytest.mark.parametrize("name", names())
def test_the_header_declares_exactly_what_the_body_uses(name: str) -> None:
    script = load(name)
    body = script.source[script.source.index("]]") + 2 :]
    used = {(kind, int(number)) for kind, number in BODY_INDEX.findall(body)}
    declared = {("KEYS", n) for n in range(1, len(script.keys) + 1)} | {
        ("ARGV", n) for n in range(1, len(script.argv) + 1)
    }
    assert used == declared, f"{name}: uses {sorted(used - declared)}, declares unused {sorted(declared - used)}"
    assert not re.search(r"['\"](embedq|rq):", body), f"{name} spells a key name: keys come from Python"


@pytest.mark.parametrize("name", names())
def test_every_script_compiles_in_a_real_redis(redis: Redis, name: str) -> None:
    assert redis.script_load(load(name).source) == load(name).sha


def test_a_call_with_other_counts_than_the_header_is_refused_before_redis(redis: Redis) -> None:
    take = bind(redis, "take_lease")
    with pytest.raises(ScriptCallError, match="take_lease takes 2 arguments, was given 1"):
        take(["lease"], ["holder"])
    with pytest.raises(ScriptCallError, match="take_lease takes 1 keys, was given 2"):
        take(["lease", "other"], ["holder", 1000])
    with pytest.raises(ScriptCallError, match="take_pass takes at least 7 keys"):
        bind(redis, "take_pass")(["doorbell"], list(range(14)))


def test_a_header_out_of_order_is_refused() -> None:
    with pytest.raises(ValueError, match=r"ARGV\[3\] is out of order"):
        header("bad", "--[[ x\n  ARGV[1] a  one\n  ARGV[3] c  three\n]]\nreturn 1")
    with pytest.raises(ValueError, match="no --\\[\\[ header"):
        header("bad", "return 1")

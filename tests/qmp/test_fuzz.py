"""Property-based tests of the monitor (hypothesis), bounded in examples.

* The wire format: whatever bytes a client sends, in whatever pieces, the
  monitor answers with strict JSON replies or hangs up, never fails a
  command or a session with an exception (it would log it), never hangs,
  and goes on serving its other clients.
* The framing: input cut anywhere is cut into the same texts.
* Object arguments: whatever value each property of an iothread is given,
  by object-add or qom-set, it is either accepted and read back as written,
  or refused with an error naming what is wrong, leaving no trace.

One monitor serves all the examples of a test.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iothreads._props import THREAD_POOL_LIMIT
from iothreads.qmp._wire import JsonStreamer

from ..helpers import INT64_MAX, IOTHREAD_PROPS, WAIT, RawClient, above_limit

# -- the wire format ------------------------------------------------------------------------

#: The commands a fuzzed request names: every one that cannot create an
#: object (object-add is the next section's), and one that does not exist.
COMMANDS = [
    "qmp_capabilities",
    "query-version",
    "query-commands",
    "query-iothreads",
    "object-del",
    "qom-get",
    "qom-set",
    "qom-list",
    "qom-list-types",
    "qom-list-properties",
    "x-query-iothread-stats",
    "x-query-thread-pools",
    "no-such-command",
]
ARGUMENT_NAMES = ["id", "path", "property", "value", "typename", "implements", "abstract", "enable"]

#: Bytes that matter to the framing and the parser, alone.
TOKENS = [b"{", b"}", b"[", b"]", b'"', b"\\", b" ", b"\n", b":", b",", b"null", b"{}" * 20]
TOKENS += [b"1e999", b"-1e999", b"NaN", b"Infinity", b"9" * 40, b"\xff", b"\x00", b'"\\ud800"']

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
requests = st.fixed_dictionaries(
    {"execute": st.sampled_from(COMMANDS) | st.text(max_size=6) | json_values},
    optional={
        "arguments": st.dictionaries(
            st.sampled_from(ARGUMENT_NAMES) | st.text(max_size=6), json_values, max_size=4
        )
        | json_values,
        "id": json_values,
        "extra": json_values,
    },
)
#: Python's json writes NaN and Infinity for non-finite floats: invalid
#: input, as a client's bug would send.
encoded = st.builds(lambda value: json.dumps(value).encode(), requests | json_values)
#: Numbers as a client may write them, beyond what json.dumps writes: a
#: double's range exceeded (read as an infinity), 400 digits, -0.
literals = st.sampled_from([b"1e999", b"-1e999", b"1" + b"0" * 400, b"1e-999", b"-0", b"0.5e1"])
literals |= st.integers().map(lambda n: str(n).encode())
#: A request with such a number where the reply could echo it (the id) or a
#: command could take it (a property's value).
with_literals = st.builds(
    lambda execute, literal, where: (
        b'{"execute": '
        + json.dumps(execute).encode()
        + b", "
        + (b'"id": ' + literal if where == "id" else b'"arguments": {"value": ' + literal + b"}")
        + b"}"
    ),
    st.sampled_from(COMMANDS),
    literals,
    st.sampled_from(["id", "arguments"]),
)
pieces = st.one_of(
    encoded,
    with_literals,
    st.tuples(encoded, st.integers(0, 64)).map(lambda cut: cut[0][: cut[1]]),  # cut short
    st.binary(max_size=48),
    st.sampled_from(TOKENS),
)


def strict(token: str) -> Any:
    raise AssertionError(f"the monitor sent {token}, which is not JSON")


def check_reply(line: bytes) -> None:
    """*line* is one reply in QMP's form, in strict JSON."""
    reply = json.loads(line, parse_constant=strict)
    assert isinstance(reply, dict), reply
    assert set(reply) - {"id"} in ({"return"}, {"error"}), reply
    if "error" in reply:
        assert set(reply["error"]) == {"class", "desc"}, reply
        assert reply["error"]["desc"], reply
        assert not reply["error"]["desc"].startswith("internal error"), reply


@settings(max_examples=150)
@given(negotiate=st.booleans(), chunks=st.lists(pieces, max_size=8))
async def test_any_input_gets_strict_replies_or_a_hang_up(
    monitor_path: str,
    raw: RawClient,
    caplog: pytest.LogCaptureFixture,
    negotiate: bool,
    chunks: list[bytes],
) -> None:
    caplog.clear()  # what an earlier example left
    reader, writer = await asyncio.open_unix_connection(monitor_path)
    try:
        assert "QMP" in json.loads(await asyncio.wait_for(reader.readline(), WAIT))
        if negotiate:
            writer.write(b'{"execute": "qmp_capabilities"}')
        try:
            for chunk in chunks:  # one write each: texts cut anywhere
                writer.write(chunk)
                await writer.drain()
            writer.write_eof()
        except ConnectionError:
            pass  # the monitor hung up on what it was sent
        # Every reply, up to the end the client's own end brings: bounded.
        while line := await asyncio.wait_for(reader.readline(), WAIT):
            assert line.endswith(b"\n"), line
            check_reply(line)
    except ConnectionResetError:
        pass  # hung up with input unread: the end as AF_UNIX reports it
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass  # closed by the monitor first
    # The other client is served all along.  Two round trips: the second
    # reply comes after the loop has reported anything the first raced with.
    for _ in range(2):
        assert await raw.request({"execute": "query-iothreads"}) == {"return": []}
    # No session ended in an exception, no command failed inside.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@settings(max_examples=200)
@given(chunks=st.lists(pieces, max_size=8))
def test_the_framing_does_not_depend_on_how_input_is_cut(chunks: list[bytes]) -> None:
    whole, cut = JsonStreamer(), JsonStreamer()
    texts = list(whole.feed(b"".join(chunks)))
    assert [text for chunk in chunks for text in cut.feed(chunk)] == texts
    assert cut.error == whole.error


# -- object arguments ---------------------------------------------------------------------

INT_MAX = 2**31 - 1
DEFAULTS = {name: 0 for name in IOTHREAD_PROPS} | {"poll-max-ns": 32768, "thread-pool-max": 64}

not_ints = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.integers(INT64_MAX + 1, 2**64 + 1),  # read as a double beyond uint64
)
#: Any value: ints at and around every boundary, and what is no int.
values = st.one_of(
    st.integers(-3, 70),
    st.integers(-(2**63), INT64_MAX),
    st.sampled_from(
        [THREAD_POOL_LIMIT, THREAD_POOL_LIMIT + 1, INT_MAX, INT_MAX + 1, INT64_MAX, -(2**63)]
    ),
    not_ints,
)
#: thread-pool-min's valid values start that many threads at once: small
#: ones only, and large ones the pool limit refuses.
pool_min_values = st.one_of(
    st.integers(-3, 4), st.integers(THREAD_POOL_LIMIT + 1, INT64_MAX), not_ints
)


def value_for(name: str) -> st.SearchStrategy[Any]:
    return pool_min_values if name == "thread-pool-min" else values


def is_int64(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value <= INT64_MAX


def refusals(props: dict[str, Any]) -> set[str]:
    """The errors QEMU's rules allow for *props* (all of an iothread's): every
    type error, else every range error (which comes first depends on the
    order the properties are read in), else a limit above the most a pool may
    have (of either, as for the range errors), else QEMU's pool limits'; none
    if valid."""
    wrong_type = {
        f"Invalid parameter type for '{name}', expected: integer"
        for name, value in props.items()
        if not is_int64(value)
    }
    if wrong_type:
        return wrong_type
    negative = {
        f"{name} value must be in range [0, {INT64_MAX}]"
        for name, value in props.items()
        if value < 0
    }
    if negative:
        return negative
    above = {
        above_limit(name, props[name])
        for name in ("thread-pool-min", "thread-pool-max")
        if props[name] > THREAD_POOL_LIMIT
    }
    if above:
        return above
    low, high = props["thread-pool-min"], props["thread-pool-max"]
    if low > high or high == 0:
        return {"bad thread-pool-min/thread-pool-max values"}
    return set()


async def read_back(client: RawClient, id: str) -> dict[str, Any]:
    """Every property of the iothread *id*, as qom-get answers."""
    got = {}
    for name in IOTHREAD_PROPS:
        reply = await client.request(
            {"execute": "qom-get", "arguments": {"path": id, "property": name}}
        )
        got[name] = reply["return"]
    return got


@settings(max_examples=40)
@given(data=st.data())
async def test_object_add_takes_a_value_as_written_or_refuses_it(
    raw: RawClient, data: st.DataObject
) -> None:
    names = data.draw(st.lists(st.sampled_from(IOTHREAD_PROPS), unique=True))
    props = {name: data.draw(value_for(name), label=name) for name in names}
    reply = await raw.request(
        {"execute": "object-add", "arguments": {"qom-type": "iothread", "id": "fz", **props}}
    )
    expected = refusals(DEFAULTS | props)
    if not expected:
        assert reply == {"return": {}}
        assert await read_back(raw, "fz") == DEFAULTS | props
        assert await raw.request({"execute": "object-del", "arguments": {"id": "fz"}}) == {
            "return": {}
        }
    else:
        assert reply["error"]["class"] == "GenericError"
        assert reply["error"]["desc"] in expected
    assert await raw.request({"execute": "query-iothreads"}) == {"return": []}


@settings(max_examples=40)
@given(data=st.data())
async def test_qom_set_takes_a_value_as_written_or_leaves_all_unchanged(
    raw: RawClient, data: st.DataObject
) -> None:
    add = {"execute": "object-add", "arguments": {"qom-type": "iothread", "id": "fz"}}
    assert await raw.request(add) == {"return": {}}
    try:
        state = dict(DEFAULTS)
        for _ in range(data.draw(st.integers(1, 4), label="sets")):
            name = data.draw(st.sampled_from(IOTHREAD_PROPS), label="property")
            value = data.draw(value_for(name), label="value")
            reply = await raw.request(
                {
                    "execute": "qom-set",
                    "arguments": {"path": "/objects/fz", "property": name, "value": value},
                }
            )
            expected = refusals(state | {name: value})
            if not expected:
                assert reply == {"return": {}}
                state[name] = value
            else:
                assert reply["error"]["class"] == "GenericError"
                assert reply["error"]["desc"] in expected
            assert await read_back(raw, "fz") == state
    finally:
        await raw.request({"execute": "object-del", "arguments": {"id": "fz"}})

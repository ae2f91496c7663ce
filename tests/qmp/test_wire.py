"""The wire format, through raw sockets: what ``qemu.qmp`` would never send.

Malformed JSON keeps the connection; integers as QEMU's parser reads them;
several requests on a line or one over many writes; oversized or deeply
nested input closes the connection, and only that one.
"""

from __future__ import annotations

import json

from iothreads.qmp import MAX_MESSAGE_BYTES, MAX_NESTING
from iothreads.qmp._wire import JsonStreamer

from ..helpers import RawClient


async def test_malformed_json_keeps_the_connection(raw: RawClient) -> None:
    await raw.send(b'{"execute": query-iothreads}\n')
    reply = await raw.receive()
    assert reply["error"]["class"] == "GenericError"
    assert reply["error"]["desc"].startswith("JSON parse error, ")
    await raw.send(b'{"execute": "\xff\xfe"}\n')
    assert (await raw.receive())["error"]["desc"].startswith("JSON parse error, invalid UTF-8")
    await raw.send(b'{"execute": "query-iothreads", "execute": "x"}\n')
    assert (await raw.receive())["error"]["desc"] == "JSON parse error, duplicate key 'execute'"
    await raw.send(b'{"execute": "qom-set", "arguments": {"value": NaN}}\n')
    assert (await raw.receive())["error"]["desc"] == "JSON parse error, invalid keyword 'NaN'"
    assert await raw.request({"execute": "query-iothreads", "id": 1}) == {"return": [], "id": 1}


async def test_replies_are_strict_json_whatever_the_id(raw: RawClient) -> None:
    # 1e999 and a 400-digit integer parse as infinities (as in QEMU's parser);
    # echoed back, they would be the bare token Infinity, which is not JSON.
    for literal in (b"1e999", b"-1e999", b"[1e999]", b"1" + b"0" * 400):
        await raw.send(b'{"execute": "query-iothreads", "id": ' + literal + b"}\n")
        assert await raw.receive() == {
            "error": {
                "class": "GenericError",
                "desc": "QMP input member 'id' holds a number beyond JSON's range; "
                "use a smaller number or a string",
            }
        }
    assert await raw.request({"execute": "query-iothreads", "id": 1e300}) == {
        "return": [],
        "id": 1e300,
    }


async def test_integers_beyond_64_bits_are_floats(raw: RawClient) -> None:
    # As QEMU's JSON parser: an integer neither int64 nor uint64 is a float,
    # however many digits it has (no parse error), so a type error here.
    assert await raw.request(
        {"execute": "object-add", "arguments": {"qom-type": "iothread", "id": "io0"}}
    ) == {"return": {}}
    type_error = {
        "error": {
            "class": "GenericError",
            "desc": "Invalid parameter type for 'poll-max-ns', expected: integer",
        }
    }
    for literal in (b"9" * 5000, b"-" + b"9" * 5000, b"1" + b"0" * 400):
        await raw.send(
            b'{"execute": "qom-set", "arguments": {"path": "io0", "property": "poll-max-ns",'
            b' "value": ' + literal + b"}}\n"
        )
        assert await raw.receive() == type_error
    get = {"execute": "qom-get", "arguments": {"path": "io0", "property": "poll-max-ns"}}
    assert await raw.request(get) == {"return": 32768}


async def test_stream_framing(raw: RawClient) -> None:
    # Several requests on one line, one request over many writes, any id.
    await raw.send(
        b'{"execute": "query-iothreads", "id": 1}{"execute": "query-commands", "id": [2]}'
        b' {"execute": "bogus", "id": {"n": 3}}\n'
    )
    assert (await raw.receive()) == {"return": [], "id": 1}
    assert (await raw.receive())["id"] == [2]
    assert (await raw.receive())["id"] == {"n": 3}
    # Top-level scalars are texts of their own, wherever they end.
    await raw.send(b'"a"{"execute": "query-iothreads"}1[2]3 \n')
    not_an_object = {"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}
    assert await raw.receive() == not_an_object
    assert await raw.receive() == {"return": []}
    for _ in range(3):
        assert await raw.receive() == not_an_object
    text = (
        b'{"execute":\n "qom-list",\r\n "arguments": {"path": "/obj\\u0065cts\\\\"}, "id": "}"}\n'
    )
    for i in range(len(text)):
        await raw.send(text[i : i + 1])
    reply = await raw.receive()
    assert reply == {
        "error": {"class": "DeviceNotFound", "desc": "Device '/objects\\' not found"},
        "id": "}",
    }


async def test_oversized_message_closes_the_connection(monitor_path: str, raw: RawClient) -> None:
    other = await RawClient.connect(monitor_path)
    try:
        filler = b"x" * (MAX_MESSAGE_BYTES + 1)
        await raw.send(b'{"execute": "qom-get", "arguments": {"path": "' + filler + b'"}}\n')
        reply = await raw.receive()
        assert reply == {
            "error": {
                "class": "GenericError",
                "desc": f"JSON message size limit exceeded (more than {MAX_MESSAGE_BYTES} bytes)",
            }
        }
        assert await raw.at_eof()
        assert await other.request({"execute": "query-iothreads"}) == {"return": []}
    finally:
        await other.close()


async def test_deep_nesting_closes_the_connection(monitor_path: str, raw: RawClient) -> None:
    other = await RawClient.connect(monitor_path)
    try:
        # A valid request first, in the same write: it is answered.
        await raw.send(b'{"execute": "query-iothreads"}' + b"[" * (MAX_NESTING + 1))
        assert await raw.receive() == {"return": []}
        assert await raw.receive() == {
            "error": {
                "class": "GenericError",
                "desc": f"JSON nesting depth limit exceeded (more than {MAX_NESTING})",
            }
        }
        assert await raw.at_eof()
        # Nesting up to the limit is fine (the request is then merely wrong).
        deep = b"[" * MAX_NESTING + b"]" * MAX_NESTING
        assert await other.request(json.loads(deep)) == {
            "error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}
        }
    finally:
        await other.close()


def test_the_streamer_scans_only_as_far_as_texts_are_taken() -> None:
    # A session that hangs up after a few texts (the error budget is spent)
    # costs no scan of the rest of what it read.
    streamer = JsonStreamer()
    texts = streamer.feed(b"]" * 1000 + b'{"a": "}"} 2 ')
    assert [next(texts), next(texts)] == [b"]", b"]"]
    # Dropped: the rest waits in the buffer for the next feed().
    assert list(streamer.feed(b"")) == [b"]"] * 998 + [b'{"a": "}"}', b"2"]

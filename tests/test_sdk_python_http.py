"""``celeriac.http``'s error paths on plain CPython, against fake ``wasi:http`` bindings.

Inside a component the SDK talks to the bindings componentize-py generates (``wit_world.imports``:
``wasi_http_types``, ``outgoing_handler``, ``streams``; ``componentize_py_types``: ``Ok``, ``Err``). The
tests through a worker (tests/test_lang_python.py) reach the paths a real server can provoke; these fakes
reach the others — a header list the host refuses, a body write or read that fails half-way, a failure
named by an error code inside a stream error — and check two things on every path: the exception a
``requests`` user expects, with the URL but never its password, and that every wasi handle the SDK was
given or created is dropped (a kept instance must not pile up host handles; the worker also drops an
instance that leaks them, at a cost).

The fakes keep the resource rules of WASI 0.2 that matter here: ``OutgoingRequest(fields)`` and
``handle(request, options)`` take what they are given, ``OutgoingBody.finish`` takes the body and refuses
one whose stream is still open, ``IncomingBody.finish`` likewise, and a child (a body, a stream) must be
dropped before it is finished.
"""

from __future__ import annotations

import importlib
import sys
import types as pytypes

import pytest

# --------------------------------------------------------------------------
# Fake bindings
# --------------------------------------------------------------------------


class Ok:
    def __init__(self, value):
        self.value = value


class Err(Exception):
    def __init__(self, value):
        super().__init__(value)
        self.value = value


class World:
    """What one test's fake host does, and every handle it gave out."""

    def __init__(self, *, handle_error=None, response_error=None, status=200, headers=(), chunks=(b"ok",),
                 read_error=None, write_error=None, fields_error=None, authority_error=False):
        self.handle_error = handle_error
        self.response_error = response_error
        self.status = status
        self.headers = list(headers)
        self.chunks = list(chunks)
        self.read_error = read_error
        self.write_error = write_error
        self.fields_error = fields_error
        self.authority_error = authority_error
        self.handles: list[Handle] = []
        self.sent: dict = {}

    def open(self) -> list[str]:
        return [repr(h) for h in self.handles if not h.closed]


class Handle:
    def __init__(self, world: World):
        self.world = world
        self.closed = False
        world.handles.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed = True

    def take(self):
        """Ownership passes to the host."""
        assert not self.closed, f"{self!r} used after it was dropped or given away"
        self.closed = True

    def __repr__(self):
        return type(self).__name__


def make_bindings(world: World):
    """The three modules the SDK imports, wired to ``world``."""

    class ErrorCode:
        value = None

    codes = {}
    for name in ("ConnectionRefused", "ConnectionReadTimeout", "HttpProtocolError", "HttpRequestDenied"):
        codes[name] = type(f"ErrorCode_{name}", (ErrorCode,), {})

    class StreamError_Closed:
        pass

    class StreamError_LastOperationFailed:
        def __init__(self, value):
            self.value = value

    class IoError(Handle):
        def __init__(self, world, code):
            super().__init__(world)
            self.code = code

    class Fields(Handle):
        def __init__(self, world, pairs):
            super().__init__(world)
            self.pairs = pairs

        @staticmethod
        def from_list(pairs):
            if world.fields_error is not None:
                raise Err(world.fields_error())
            return Fields(world, list(pairs))

        def entries(self):
            return list(self.pairs)

    class OutputStream(Handle):
        def blocking_write_and_flush(self, data):
            if world.write_error is not None:
                raise Err(StreamError_LastOperationFailed(IoError(world, world.write_error)))
            world.sent.setdefault("body", b"")
            world.sent["body"] += bytes(data)

    class OutgoingBody(Handle):
        def __init__(self, world):
            super().__init__(world)
            self.stream = None

        def write(self):
            self.stream = OutputStream(world)
            return self.stream

        @staticmethod
        def finish(body, trailers):
            assert body.stream is None or body.stream.closed, "finished with its stream still open"
            body.take()

    class OutgoingRequest(Handle):
        def __init__(self, fields):
            super().__init__(world)
            fields.take()
            world.sent["headers"] = fields.pairs
            self.outgoing = None

        def set_method(self, m):
            world.sent["method"] = m

        def set_scheme(self, s):
            world.sent["scheme"] = s

        def set_authority(self, a):
            if world.authority_error:
                raise Err(None)
            world.sent["authority"] = a

        def set_path_with_query(self, p):
            world.sent["path"] = p

        def body(self):
            self.outgoing = OutgoingBody(world)
            return self.outgoing

    class RequestOptions(Handle):
        def __init__(self):
            super().__init__(world)

        def set_connect_timeout(self, v):
            world.sent["connect_timeout"] = v

        def set_first_byte_timeout(self, v):
            world.sent["first_byte_timeout"] = v

        def set_between_bytes_timeout(self, v):
            world.sent["between_bytes_timeout"] = v

    class Pollable(Handle):
        def block(self):
            pass

    class InputStream(Handle):
        def __init__(self, world):
            super().__init__(world)
            self.left = list(world.chunks)

        def blocking_read(self, n):
            if self.left:
                return self.left.pop(0)
            if world.read_error is not None:
                raise Err(StreamError_LastOperationFailed(IoError(world, world.read_error)))
            raise Err(StreamError_Closed())

    class FutureTrailers(Handle):
        pass

    class IncomingBody(Handle):
        def __init__(self, world):
            super().__init__(world)
            self.input = None

        def stream(self):
            self.input = InputStream(world)
            return self.input

        @staticmethod
        def finish(body):
            assert body.input is None or body.input.closed, "finished with its stream still open"
            body.take()
            return FutureTrailers(world)

    class IncomingResponse(Handle):
        def status(self):
            return world.status

        def headers(self):
            return Fields(world, [(n, v.encode()) for n, v in world.headers])

        def consume(self):
            return IncomingBody(world)

    class FutureIncomingResponse(Handle):
        def __init__(self, world):
            super().__init__(world)
            self.polled = 0

        def subscribe(self):
            return Pollable(world)

        def get(self):
            self.polled += 1
            if self.polled == 1:
                return None  # not ready yet: the SDK subscribes and blocks
            if world.response_error is not None:
                return Ok(Err(world.response_error()))
            return Ok(Ok(IncomingResponse(world)))

    def handle(request, options):
        request.take()
        if options is not None:
            options.take()
        if world.handle_error is not None:
            raise Err(world.handle_error())
        return FutureIncomingResponse(world)

    def http_error_code(err):
        return err.code() if err.code is not None else None

    http_types = pytypes.SimpleNamespace(
        Fields=Fields, OutgoingRequest=OutgoingRequest, OutgoingBody=OutgoingBody, IncomingBody=IncomingBody,
        RequestOptions=RequestOptions, http_error_code=http_error_code,
        Scheme_Http=lambda: "http", Scheme_Https=lambda: "https", Method_Other=lambda m: m,
        **{f"Method_{m}": (lambda m=m: m.upper()) for m in
           ("Get", "Head", "Post", "Put", "Delete", "Connect", "Options", "Trace", "Patch")},
    )
    streams = pytypes.SimpleNamespace(StreamError_Closed=StreamError_Closed,
                                      StreamError_LastOperationFailed=StreamError_LastOperationFailed)
    imports = pytypes.ModuleType("wit_world.imports")
    imports.wasi_http_types = http_types
    imports.streams = streams
    imports.outgoing_handler = pytypes.SimpleNamespace(handle=handle)
    header_error = type("HeaderError_Forbidden", (), {})
    return imports, codes, header_error


@pytest.fixture
def fake(sdk, monkeypatch):
    """``fake(**world)`` -> (the SDK's http module, the world, error codes, the header error)."""
    http = importlib.import_module("celeriac.http")
    top = pytypes.ModuleType("componentize_py_types")
    top.Ok, top.Err = Ok, Err
    monkeypatch.setitem(sys.modules, "componentize_py_types", top)

    def start(**kw):
        world = World(**kw)
        imports, codes, header_error = make_bindings(world)
        package = pytypes.ModuleType("wit_world")
        package.imports = imports
        monkeypatch.setitem(sys.modules, "wit_world", package)
        monkeypatch.setitem(sys.modules, "wit_world.imports", imports)
        return http, world, codes, header_error

    return start


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------

def test_a_request_reads_the_whole_body_and_drops_every_handle(fake):
    http, world, _, _ = fake(status=201, headers=[("Content-Type", "application/json")], chunks=[b'{"a"', b": 1}"])
    r = http.post("http://user:secret@api.test:8080/p?q=1", json={"x": 1}, params={"n": 2}, timeout=(1, 2))
    assert (r.status_code, r.json(), r.headers["content-type"]) == (201, {"a": 1}, "application/json")
    assert world.sent["authority"] == "api.test:8080" and world.sent["path"] == "/p?q=1&n=2"
    assert world.sent["body"] == b'{"x": 1}'
    assert (world.sent["connect_timeout"], world.sent["first_byte_timeout"]) == (1_000_000_000, 2_000_000_000)
    assert ("authorization", b"Basic dXNlcjpzZWNyZXQ=") in world.sent["headers"]
    assert "secret" not in r.url
    assert world.open() == []


def test_a_request_the_host_refuses_at_once_is_a_connection_error_without_the_password(fake):
    http, world, codes, _ = fake()
    world.handle_error = codes["ConnectionRefused"]
    with pytest.raises(ConnectionError) as info:
        http.get("http://user:secret@api.test/x")
    assert str(info.value) == "ConnectionRefused: GET http://api.test/x"
    assert world.open() == []


def test_a_response_that_times_out_is_a_timeout_error(fake):
    http, world, codes, _ = fake()
    world.response_error = codes["ConnectionReadTimeout"]
    with pytest.raises(TimeoutError, match=r"^ConnectionReadTimeout: PUT http://api\.test/slow$"):
        http.put("http://api.test/slow", data="x" * 10_000)
    assert world.sent["body"] == b"x" * 10_000  # written in pieces, all of it
    assert world.open() == []


def test_a_body_that_breaks_half_way_names_the_error_code_and_drops_its_error_handle(fake):
    http, world, codes, _ = fake(chunks=[b"part"])
    world.read_error = codes["HttpProtocolError"]
    with pytest.raises(ConnectionError, match=r"^HttpProtocolError: GET http://api\.test/$"):
        http.get("http://api.test")
    assert world.open() == []


def test_a_body_read_failing_without_an_error_code_is_still_a_connection_error(fake):
    # The stream error's io error names no wasi:http error code.
    http, world, _, _ = fake(chunks=[], read_error=lambda: None)
    with pytest.raises(ConnectionError, match=r"^reading the body failed: GET http://api\.test/$"):
        http.get("http://api.test/")
    assert world.open() == []


def test_a_body_write_that_fails_reports_why_the_request_failed(fake):
    http, world, codes, _ = fake()
    world.write_error = codes["HttpRequestDenied"]
    world.response_error = codes["HttpRequestDenied"]
    with pytest.raises(ConnectionError, match=r"^HttpRequestDenied: POST http://api\.test/$"):
        http.post("http://api.test/", data=b"payload")
    assert world.open() == []


def test_headers_the_host_refuses_are_a_value_error_naming_them(fake):
    http, world, _, header_error = fake()
    world.fields_error = header_error
    with pytest.raises(ValueError, match=r"the headers \['X-Bad'\] cannot be sent \(Forbidden\)"):
        http.get("http://api.test/", headers={"X-Bad": "1"})
    assert world.open() == []


def test_a_host_the_request_cannot_carry_is_a_value_error_and_the_request_is_dropped(fake):
    http, world, _, _ = fake(authority_error=True)
    with pytest.raises(ValueError, match=r"^invalid host for an HTTP request: GET http://api\.test/$"):
        http.get("http://user:secret@api.test/")
    assert world.open() == []

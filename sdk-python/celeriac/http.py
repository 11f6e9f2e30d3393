"""Outbound HTTP from a Python task, over the worker's ``wasi:http``: ``celeriac.http.get(url)``.

A task component has no sockets: its requests go through the worker, which
sends one only to a host the task is granted (``http_allow`` in
``task_annotations`` or in the tenant's ``tenant.toml`` ``[annotations]``). A
request to any other host fails in the task with ``ConnectionError``
(``HttpRequestDenied: ...``), and a call that then fails is stored as
``PermissionError`` naming the host.

The API is a small part of ``requests``' shape::

    from celeriac import http, task

    @task
    def price(sku):
        r = http.get("https://api.example.com/prices", params={"sku": sku}, timeout=5)
        r.raise_for_status()
        return r.json()["price"]

``request(method, url, params=, headers=, data=, json=, timeout=)`` and its
shorthands ``get``, ``head``, ``post``, ``put``, ``patch``, ``delete`` return a
:class:`Response` (``status_code``, ``headers`` (case-insensitive), ``content``,
``text``, ``json()``, ``ok``, ``raise_for_status()``) once the whole body is
read. ``timeout`` is seconds, or ``(connect, read)`` as in requests. A failure
to connect or a broken response raises the builtin ``ConnectionError``
(``TimeoutError`` for a timeout), its message starting with the ``wasi:http``
error code (``ConnectionRefused: GET http://...``); a URL, method or header the
request cannot carry raises ``ValueError``; an HTTP error status is not an
exception until ``raise_for_status()``. ``user:password@`` in the URL becomes a
Basic ``Authorization`` header and is never shown in messages. Bodies are held
in memory, within the task's ``max_memory``. A call that sent a request never
keeps its instance (``max_calls_per_instance``): nothing of it outlives the call.
"""

from __future__ import annotations

import base64
# Imported at build time so componentize-py bundles it: a component cannot load a module it
# did not import then (the "idna" codec encodes non-ASCII host names).
import encodings.idna  # noqa: F401
import json as _json
import math
from typing import Any, Iterable, Iterator, Mapping, Optional, Tuple, Union
from urllib.parse import quote, unquote, urlencode, urlsplit

__all__ = ["HTTPError", "Headers", "Response", "request", "get", "head", "post", "put", "patch", "delete"]

# How much the SDK reads from, or writes to, a stream per call (wasi:io caps a write at 4096 bytes).
_READ = 65536
_WRITE = 4096
# Error codes that mean a timeout, raised as the builtin TimeoutError.
_TIMEOUTS = {"DnsTimeout", "ConnectionTimeout", "ConnectionReadTimeout", "ConnectionWriteTimeout",
             "HttpResponseTimeout"}
# What a path or query may hold unquoted (requests' requote_uri: reserved and unreserved characters, and %).
_SAFE = "!#$%&'()*+,/:;=?@[]~"
# wasi:http timeouts are u64 nanoseconds.
_MAX_NS = 2**64 - 1


class HTTPError(Exception):
    """Raised by :meth:`Response.raise_for_status` for a 4xx or 5xx status."""

    def __init__(self, message: str, response: Optional["Response"] = None) -> None:
        super().__init__(message)
        self.response = response


class Headers(Mapping):
    """Response headers: names compared without case (``r.headers["Content-Type"]``); a header sent
    several times has its values joined with ``", "``."""

    def __init__(self, pairs: Iterable[Tuple[str, str]] = ()) -> None:
        self._items: dict = {}
        for name, value in pairs:
            key = name.lower()
            if key in self._items:
                value = f"{self._items[key][1]}, {value}"
            self._items[key] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return repr(dict(self.items()))


class Response:
    """A response whose body has been read in full."""

    def __init__(self, method: str, url: str, status_code: int, headers: Mapping[str, str], content: bytes) -> None:
        self.method = method
        self.url = url
        self.status_code = status_code
        self.headers = headers if isinstance(headers, Headers) else Headers(headers.items())
        self.content = content

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def encoding(self) -> str:
        for part in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                return value.strip('"')
        return "utf-8"

    @property
    def text(self) -> str:
        try:
            return self.content.decode(self.encoding, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return _json.loads(self.content)

    def raise_for_status(self) -> None:
        if 400 <= self.status_code < 600:
            kind = "Client" if self.status_code < 500 else "Server"
            raise HTTPError(f"{self.status_code} {kind} Error for url: {self.url}", response=self)

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"


def _bindings():
    # Generated by componentize-py when it builds the component (and bundled
    # because celeriac._component imports them at build time).
    try:
        from componentize_py_types import Err, Ok
        from wit_world.imports import outgoing_handler, streams
        from wit_world.imports import wasi_http_types as types
    except ImportError as e:
        raise RuntimeError("celeriac.http needs the Celeriac worker: it only works inside a task component") from e
    return Ok, Err, outgoing_handler, streams, types


def _failure(code: Any, method: str, url: str) -> Exception:
    name = type(code).__name__.removeprefix("ErrorCode_") if code is not None else "InternalError"
    value = getattr(code, "value", None)
    detail = f" ({value})" if value is not None and not isinstance(value, (int, bytes)) else ""
    message = f"{name}{detail}: {method} {url}"
    return TimeoutError(message) if name in _TIMEOUTS else ConnectionError(message)


def _method(types: Any, method: str) -> Any:
    known = {"GET": types.Method_Get, "HEAD": types.Method_Head, "POST": types.Method_Post,
             "PUT": types.Method_Put, "DELETE": types.Method_Delete, "CONNECT": types.Method_Connect,
             "OPTIONS": types.Method_Options, "TRACE": types.Method_Trace, "PATCH": types.Method_Patch}
    cls = known.get(method)
    return cls() if cls else types.Method_Other(method)


def _header_list(headers: Union[Mapping[str, Any], Iterable, None]) -> list:
    """``(name, bytes)`` pairs; a ``None`` value leaves the header out, as in requests."""
    items = headers.items() if isinstance(headers, Mapping) else (headers or [])
    out = []
    for name, value in items:
        if value is None:
            continue
        try:
            raw = value if isinstance(value, bytes) else str(value).encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"header {name!r}: its value is not Latin-1 text (encode it, e.g. as UTF-8 bytes)") \
                from None
        out.append((str(name), raw))
    return out


def _query(params: Union[Mapping[str, Any], Iterable, None]) -> str:
    """``params`` encoded as requests encodes them: ``None`` values are left out, lists repeat the key."""
    items = params.items() if isinstance(params, Mapping) else (params or [])
    return urlencode([(k, v) for k, v in items if v is not None], doseq=True)


def _timeouts(timeout: Union[float, Tuple[Optional[float], Optional[float]], None]) -> tuple:
    """``(connect, first byte, between bytes)`` in nanoseconds (``None``: the worker's default)."""
    def ns(seconds: Optional[float]) -> Optional[int]:
        if seconds is None:
            return None
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0 or math.isnan(seconds):
            raise ValueError(f"timeout must be a number of seconds >= 0 or None, not {seconds!r}")
        return _MAX_NS if math.isinf(seconds) else min(int(seconds * 1e9), _MAX_NS)

    if isinstance(timeout, tuple):
        if len(timeout) != 2:
            raise ValueError(f"timeout must be seconds or a (connect, read) pair, not {timeout!r}")
        connect, read = ns(timeout[0]), ns(timeout[1])
        return connect, read, read
    t = ns(timeout)
    return t, t, t


def request(method: str, url: str, *, params: Union[Mapping[str, Any], Iterable, None] = None,
            headers: Union[Mapping[str, Any], Iterable, None] = None, data: Union[bytes, str, Mapping, None] = None,
            json: Any = None, timeout: Union[float, Tuple[Optional[float], Optional[float]], None] = None) -> Response:
    """Send ``method`` to ``url`` (``http://`` or ``https://``) and read the whole response.

    ``params`` are appended to the query string; ``data`` is the body (bytes, text
    sent as UTF-8, or a mapping sent as a form); ``json`` is sent as a JSON body
    (with ``content-type: application/json``); ``timeout`` (seconds, or a
    ``(connect, read)`` pair) bounds the connect, the wait for the first byte and
    each wait between bytes. The task's own time limit bounds the whole call in any case.
    """
    Ok, Err, outgoing_handler, streams, types = _bindings()
    method = str(method).upper()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http:// or https:// URL: {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid port in URL {parts.scheme}://{parts.hostname}...") from None
    try:
        host = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"invalid host name in URL: {parts.hostname!r}") from None
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    authority = f"{host}:{port}" if port is not None else host
    query = parts.query
    extra = _query(params)
    if extra:
        query = f"{query}&{extra}" if query else extra
    path = quote(parts.path or "/", safe=_SAFE) + (f"?{quote(query, safe=_SAFE)}" if query else "")
    shown = f"{parts.scheme}://{authority}{path}"

    header_list = _header_list(headers)
    names = {n.lower() for n, _ in header_list}
    if parts.username is not None and "authorization" not in names:
        user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode("latin-1", "replace")
        header_list.append(("authorization", b"Basic " + base64.b64encode(user_pass)))
    body: Optional[bytes] = None
    if json is not None:
        body = _json.dumps(json).encode()
        if "content-type" not in names:
            header_list.append(("content-type", b"application/json"))
    elif isinstance(data, Mapping):
        body = _query(data).encode()
        if "content-type" not in names:
            header_list.append(("content-type", b"application/x-www-form-urlencoded"))
    elif isinstance(data, str):
        body = data.encode()
    elif data is not None:
        body = bytes(data)
    if body is not None and "content-length" not in names:
        header_list.append(("content-length", str(len(body)).encode()))
    connect, first_byte, between_bytes = _timeouts(timeout)

    try:
        fields = types.Fields.from_list(header_list)
    except Err as e:
        why = type(e.value).__name__.removeprefix("HeaderError_")
        raise ValueError(f"the headers {[n for n, _ in header_list]} cannot be sent ({why})") from None
    req = types.OutgoingRequest(fields)
    for what, setter, value in (("method", req.set_method, _method(types, method)),
                                ("scheme", req.set_scheme, types.Scheme_Https() if parts.scheme == "https"
                                 else types.Scheme_Http()),
                                ("host", req.set_authority, authority),
                                ("path", req.set_path_with_query, path)):
        try:
            setter(value)
        except Err:
            req.__exit__(None, None, None)
            raise ValueError(f"invalid {what} for an HTTP request: {method} {shown}") from None
    try:
        outgoing = req.body()
    except Err:
        req.__exit__(None, None, None)
        raise ValueError(f"cannot send a body with {method} {shown}") from None

    options = None
    if (connect, first_byte, between_bytes) != (None, None, None):
        options = types.RequestOptions()
        for set_timeout, value in ((options.set_connect_timeout, connect),
                                   (options.set_first_byte_timeout, first_byte),
                                   (options.set_between_bytes_timeout, between_bytes)):
            if value is None:
                continue
            try:
                set_timeout(value)
            except Err:
                pass  # the worker does not support this one: its default applies

    try:
        future = outgoing_handler.handle(req, options)
    except Err as e:
        outgoing.__exit__(None, None, None)
        raise _failure(e.value, method, shown) from None
    with future:
        finishing = False
        try:
            if body:
                with outgoing.write() as stream:
                    for i in range(0, len(body), _WRITE):
                        stream.blocking_write_and_flush(body[i:i + _WRITE])
            finishing = True
            types.OutgoingBody.finish(outgoing, None)  # takes the body, even when it fails
        except Err as e:
            # The request failed while its body was sent: the response says why.
            _drop_stream_error(e.value, streams)
            if not finishing:
                outgoing.__exit__(None, None, None)
        while (result := future.get()) is None:
            with future.subscribe() as ready:
                ready.block()
    # Ok(Ok(response)), Ok(Err(error-code)); Err(()) only if read twice.
    if not isinstance(result, Ok) or not isinstance(result.value, Ok):
        raise _failure(result.value.value if isinstance(result, Ok) else None, method, shown)
    with result.value.value as response:
        status = response.status()
        with response.headers() as fields:
            headers_out = Headers((name, value.decode("latin-1")) for name, value in fields.entries())
        incoming = response.consume()
        chunks = []
        try:
            with incoming.stream() as stream:
                while True:
                    try:
                        chunks.append(stream.blocking_read(_READ))
                    except Err as e:
                        if isinstance(e.value, streams.StreamError_Closed):
                            break
                        code = _stream_error_code(e.value, types)
                        if code is None:
                            raise ConnectionError(f"reading the body failed: {method} {shown}") from None
                        raise _failure(code, method, shown) from None
        finally:
            types.IncomingBody.finish(incoming).__exit__(None, None, None)
    return Response(method, shown, status, headers_out, b"".join(chunks))


def _drop_stream_error(error: Any, streams: Any) -> None:
    """Drop the wasi:io error handle a failed stream operation carries (not a `closed`)."""
    if isinstance(error, streams.StreamError_LastOperationFailed):
        error.value.__exit__(None, None, None)


def _stream_error_code(error: Any, types: Any) -> Any:
    """The wasi:http error code behind a failed body read (``None`` if it names none); drops the handle."""
    inner = getattr(error, "value", None)
    if inner is None:
        return None
    try:
        return types.http_error_code(inner)
    finally:
        inner.__exit__(None, None, None)


def get(url: str, **kwargs: Any) -> Response:
    return request("GET", url, **kwargs)


def head(url: str, **kwargs: Any) -> Response:
    return request("HEAD", url, **kwargs)


def post(url: str, **kwargs: Any) -> Response:
    return request("POST", url, **kwargs)


def put(url: str, **kwargs: Any) -> Response:
    return request("PUT", url, **kwargs)


def patch(url: str, **kwargs: Any) -> Response:
    return request("PATCH", url, **kwargs)


def delete(url: str, **kwargs: Any) -> Response:
    return request("DELETE", url, **kwargs)

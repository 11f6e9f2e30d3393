"""Write Celery tasks in Python that a Celeriac worker runs as WebAssembly components.

A task reads like Celery's::

    from celeriac import task

    @task
    def add(x, y):
        return x + y

    @task(bind=True, max_retries=5, autoretry_for=(ConnectionError,))
    def fetch(self, url):
        self.update_state(state="PROGRESS", meta={"url": url})
        ...

`celeriac build` compiles the project's modules with componentize-py into one
component (``tasks.wasm`` serves ``tasks.add``). This package is embedded in the
``celeriac`` binary and provided at build time, so a project does not vendor it.

Outside a component (plain CPython, e.g. in a project's unit tests) the
decorated functions are still callable: ``add(2, 2) == 4``; only the calls into
the worker (``self.request``, ``update_state``, logging to the worker) need a
component and raise ``RuntimeError`` elsewhere.

Mapping to the contract (``wit/task.wit``, ``celeriac:task@0.2.0``):

* the arguments arrive as JSON and the return value is sent back as JSON
  (``json.dumps``: lists, dicts, str, int, float, bool, None);
* an exception raised by the task reaches the client as the same class name:
  built-in classes stay built-in (``except ValueError`` works in the client),
  others carry their Python module name; ``exc.args`` are sent one JSON value
  each (``repr()`` of anything JSON cannot encode) and the Python traceback of
  the task's own frames becomes part of ``result.traceback``;
* ``raise self.retry(countdown=..., exc=..., max_retries=...)`` asks the worker
  for a retry (Celery's ``Task.retry``);
* ``signature("tasks.add", args=(2, 2)).delay()``, ``add.delay(2, 2)`` / ``add.s(2)``
  for tasks of the same component, ``chain``/``group``/``chord`` and ``raise
  self.replace(sig)`` send tasks from a task (the ``canvas`` interface), when the
  worker grants the task ``send_tasks = true``; ``delay()`` returns an
  ``AsyncResult`` with the ``id`` (results cannot be waited for inside a task);
* ``config("api_key")`` reads a value the operator set for the task's tenant
  (the ``[config]`` table of its ``tenant.toml``; ``None`` when unset);
* ``celeriac.http.get(url)`` (``post``, ``request``, ...) sends an HTTP request
  through the worker to a host the task is granted (``http_allow``): see
  ``celeriac/http.py``;
* a ``BaseException`` that is not an ``Exception`` (``SystemExit``,
  ``KeyboardInterrupt``) and ``os.abort()`` are not caught: the instance traps
  and the worker reports a ``FAILURE``, as a Rust panic.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Optional

__all__ = [
    "task",
    "Task",
    "Request",
    "Retry",
    "Signature",
    "AsyncResult",
    "signature",
    "chain",
    "group",
    "chord",
    "send_task",
    "soft_time_left",
    "config",
    "Ignore",
    "Reject",
    "SoftTimeLimitExceeded",
    "get_task_logger",
    "REGISTRY",
]

#: Every task declared so far, by name (the name without the component prefix).
REGISTRY: dict[str, "Task"] = {}

#: Options of ``@task(...)`` that become the WIT ``task-options`` record.
_OPTION_NAMES = (
    "rate_limit",
    "time_limit",
    "soft_time_limit",
    "max_retries",
    "default_retry_delay",
    "autoretry_for",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
    "acks_late",
    "ignore_result",
    "queue",
)


class Retry(Exception):
    """Raised by ``Task.retry``: the worker sends the task again later.

    As in Celery, ``self.retry(...)`` raises it itself; ``raise self.retry(...)``
    reads better and works the same.
    """

    def __init__(self, countdown: Optional[float] = None, eta: Any = None, exc: Optional[BaseException] = None,
                 max_retries: Optional[int] = None):
        super().__init__(f"Retry in {countdown}s" if countdown is not None else "Retry")
        self.countdown = countdown
        self.eta = eta
        self.exc = exc
        self.max_retries = max_retries


class Ignore(Exception):
    """Celery's ``raise Ignore()``: nothing is stored for the task and no callback runs."""


class Reject(Exception):
    """Celery's ``raise Reject(reason, requeue=False)``: nothing is stored and the message is given
    back to its queue (``requeue=True``) or dropped. Needs ``acks_late``, as in Celery."""

    def __init__(self, reason: Any = None, requeue: bool = False):
        super().__init__(reason, requeue)
        self.reason = reason
        self.requeue = requeue


class Request:
    """Celery's ``Task.request``: what the worker knows about the running call."""

    @property
    def delivery_info(self) -> dict:
        """Celery's ``request.delivery_info`` (``exchange``, ``routing_key``, ``priority``,
        ``redelivered``) with the message's ``reply_to``, ``correlation_id``, ``content_type``."""
        return json.loads(_host().delivery_info())

    def __init__(self, ctx: Any, args: list, kwargs: dict):
        self.id: str = ctx.id
        self.task: str = ctx.name
        self.retries: int = ctx.retries
        self.eta: Optional[str] = ctx.eta
        self.expires: Optional[str] = ctx.expires
        self.root_id: Optional[str] = ctx.root_id
        self.parent_id: Optional[str] = ctx.parent_id
        self.group: Optional[str] = ctx.group_id
        self.hostname: str = ctx.hostname
        try:
            self.headers: dict = json.loads(ctx.headers) if ctx.headers else {}
        except ValueError:
            self.headers = {}
        self.args = args
        self.kwargs = kwargs
        self.called_directly = False
        self.is_eager = False

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def __repr__(self) -> str:
        return f"<Request {self.task}[{self.id}] retries={self.retries}>"


def _host():
    """The worker's ``host`` interface; only inside a component."""
    try:
        from wit_world.imports import host  # generated by componentize-py at build time
    except ImportError as e:  # plain CPython: no worker to talk to
        raise RuntimeError("this needs the Celeriac worker: it only works inside a task component") from e
    return host


def _canvas():
    """The worker's ``canvas`` interface; only inside a component."""
    try:
        from wit_world.imports import canvas  # generated by componentize-py at build time
    except ImportError as e:
        raise RuntimeError("sending tasks needs the Celeriac worker: it only works inside a task component") from e
    return canvas


def _raise_host_error(err: Any) -> None:
    """A ``task-error`` from the worker (``componentize_py_types.Err``) as the Python exception it names."""
    e = getattr(err, "value", err)
    cls = getattr(__import__("builtins"), getattr(e, "exc_type", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = RuntimeError
    raise cls(getattr(e, "message", str(e))) from None


def _canvas_call(fn: str, sig: dict) -> Any:
    """``canvas.<fn>(json.dumps(sig))``; a ``task-error`` from the worker raised as the exception it names."""
    try:
        return getattr(_canvas(), fn)(json.dumps(sig))
    except Exception as e:
        if type(e).__name__ == "Err":
            _raise_host_error(e)
        raise


class AsyncResult:
    """The id of a task sent from a task (Celery's ``AsyncResult``; nothing to wait on inside a task)."""

    def __init__(self, id: str):
        self.id = id

    def __str__(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"


class Signature(dict):
    """A Celery signature: the dict Celery sends (``task``, ``args``, ``kwargs``, ``options``,
    ``subtask_type``, ``immutable``). ``a | b`` chains."""

    def __init__(self, task: str, args: Any = (), kwargs: Optional[dict] = None, options: Optional[dict] = None,
                 subtask_type: Optional[str] = None, immutable: bool = False, **extra_options: Any):
        super().__init__(task=task, args=list(args), kwargs=dict(kwargs or {}),
                         options={**(options or {}), **extra_options}, subtask_type=subtask_type,
                         immutable=immutable)

    def set(self, **options: Any) -> "Signature":
        self["options"].update(options)
        return self

    def apply_async(self, args: Any = (), kwargs: Optional[dict] = None, **options: Any) -> AsyncResult:
        """Send it, with ``args`` put before its own and ``options`` over its own (Celery's ``apply_async``)."""
        sig = Signature(self["task"], list(args) + list(self["args"]), {**self["kwargs"], **(kwargs or {})},
                        {**self["options"], **options}, self["subtask_type"], self["immutable"])
        return AsyncResult(_canvas_call("send", sig))

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def __or__(self, other: "Signature") -> "Signature":
        return chain(self, other)


def signature(name: str, args: Any = (), kwargs: Optional[dict] = None, **options: Any) -> Signature:
    """Celery's ``app.signature(name, args, kwargs, **options)``, by full task name (``tasks.add``)."""
    return Signature(name, args, kwargs, options)


def send_task(name: str, args: Any = (), kwargs: Optional[dict] = None, **options: Any) -> AsyncResult:
    """Celery's ``app.send_task(name, args, kwargs, **options)``."""
    return signature(name, args, kwargs, **options).apply_async()


def _steps(sigs: tuple) -> list:
    if len(sigs) == 1 and not isinstance(sigs[0], dict):
        sigs = tuple(sigs[0])
    return [dict(s) for s in sigs]


def chain(*sigs: Any) -> Signature:
    """Celery's ``chain(a, b, c)`` (or ``a | b | c``)."""
    steps: list = []
    for s in _steps(sigs):
        steps.extend(s["kwargs"]["tasks"] if s.get("subtask_type") == "chain" else [s])
    return Signature("celery.chain", (), {"tasks": steps}, subtask_type="chain")


def group(*sigs: Any) -> Signature:
    """Celery's ``group(a, b, c)`` (or ``group(generator)``)."""
    return Signature("celery.group", (), {"tasks": _steps(sigs)}, subtask_type="group")


class _Chord:
    def __init__(self, header: Signature):
        self.header = header

    def __call__(self, body: Signature) -> AsyncResult:
        return self.with_body(body).apply_async()

    def with_body(self, body: Signature) -> Signature:
        return Signature("celery.chord", (), {"header": self.header, "body": body, "kwargs": {}},
                         subtask_type="chord")


def chord(header: Any, body: Optional[Signature] = None) -> Any:
    """Celery's ``chord(header)(body)`` (sends it) or ``chord(header, body)`` (a signature)."""
    c = _Chord(group(header) if not (isinstance(header, dict) and header.get("subtask_type") == "group") else header)
    return c if body is None else c.with_body(body)


class SoftTimeLimitExceeded(Exception):
    """Celery's ``celery.exceptions.SoftTimeLimitExceeded``: raise it when the task stops at its soft
    time limit (``soft_time_left() <= 0``); the client re-raises Celery's own class."""


SoftTimeLimitExceeded.__module__ = "celery.exceptions"


def soft_time_left() -> Optional[float]:
    """Seconds until the call's soft time limit (negative once passed), ``None`` without one.

    Celery raises ``SoftTimeLimitExceeded`` inside a Python task; a wasm guest cannot be
    interrupted, so a task asks and stops itself. The hard limit still stops the call."""
    return _host().soft_time_left()


def config(key: str, default: Optional[str] = None) -> Optional[str]:
    """The value of ``key`` in the ``[config]`` table of this task's tenant (its ``tenant.toml``),
    ``default`` when the operator set none (or the task belongs to no tenant). The worker never logs it."""
    try:
        from wit_world.imports import config as tenant_config  # generated by componentize-py at build time
    except ImportError as e:
        raise RuntimeError("config() needs the Celeriac worker: it only works inside a task component") from e
    value = tenant_config.get(key)
    return default if value is None else value


class _Replaced(Exception):
    """Raised by ``Task.replace``: the call ends, and the worker sends the replacement in its place."""


#: The task running now (to name sibling tasks with the component's prefix).
_running: Optional["Task"] = None


class Task:
    """A task: the decorated function plus the options it declared."""

    def __init__(self, fun: Callable, *, name: Optional[str] = None, bind: bool = False, **options: Any):
        unknown = set(options) - set(_OPTION_NAMES)
        if unknown:
            raise TypeError(f"@task() got unexpected option(s): {', '.join(sorted(unknown))} "
                            f"(supported: bind, name, {', '.join(_OPTION_NAMES)})")
        self.run = fun
        self.name = name or fun.__name__
        self.bind = bind
        self.options = options
        self.max_retries = options.get("max_retries", 3)
        self.default_retry_delay = options.get("default_retry_delay", 180)
        self._request: Optional[Request] = None
        self._call_args: tuple[list, dict] = ([], {})
        self.__doc__ = fun.__doc__
        self.__name__ = fun.__name__
        self.__module__ = fun.__module__
        self.__wrapped__ = fun

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.bind:
            return self.run(self, *args, **kwargs)
        return self.run(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    @property
    def request(self) -> Request:
        """The running call's context (asked from the worker once per call)."""
        if self._request is None:
            args, kwargs = self._call_args
            self._request = Request(_host().request(), args, kwargs)
        return self._request

    def update_state(self, task_id: Optional[str] = None, state: Optional[str] = None, meta: Any = None) -> None:
        """Report a custom state (e.g. ``PROGRESS``) that the client sees as ``result.state``/``result.info``.

        Only the running task's own state can be set: ``task_id``, when given,
        must be the running call's id.
        """
        if not state:
            raise ValueError("update_state needs a state, e.g. update_state(state=\"PROGRESS\", meta={...})")
        if task_id is not None and task_id != self.request.id:
            raise ValueError("update_state can only set the state of the running task")
        _host().update_state(state, json.dumps(meta))

    def retry(self, args: Any = None, kwargs: Any = None, exc: Optional[BaseException] = None, throw: bool = True,
              eta: Any = None, countdown: Optional[float] = None, max_retries: Optional[int] = None,
              **options: Any) -> Retry:
        """Ask the worker to run this task again later (Celery's ``Task.retry``).

        The retry runs with the same arguments (``args``/``kwargs`` cannot be
        changed here). Raises the ``Retry`` exception, as Celery does, unless
        ``throw=False``; then it is returned for ``raise self.retry(...)``.
        """
        if args is not None or kwargs is not None:
            raise TypeError("celeriac retries run with the same arguments: retry(args=, kwargs=) is not supported")
        if eta is not None and hasattr(eta, "isoformat"):
            eta = eta.isoformat()
        r = Retry(countdown=countdown, eta=eta, exc=exc, max_retries=max_retries)
        if throw:
            raise r
        return r

    @property
    def full_name(self) -> str:
        """The Celery task name, e.g. ``tasks.add``: the running task's component prefix plus this name."""
        running = _running
        if running is None:
            raise RuntimeError("a task's full name is only known while a task of its component runs")
        current = running.request.task
        prefix = current[: len(current) - len(running.name)] if current.endswith(running.name) else ""
        return prefix + self.name

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this task (Celery's ``add.s(2, 2)``)."""
        return Signature(self.full_name, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature (Celery's ``add.si(2, 2)``)."""
        return Signature(self.full_name, args, kwargs, immutable=True)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send this task (Celery's ``add.delay(2, 2)``) from the running task."""
        return self.s(*args, **kwargs).apply_async()

    def apply_async(self, args: Any = (), kwargs: Optional[dict] = None, **options: Any) -> AsyncResult:
        return Signature(self.full_name, args, kwargs, options).apply_async()

    def replace(self, sig: Signature) -> None:
        """Replace the running task with ``sig`` (Celery's ``raise self.replace(sig)``): the client
        waiting on this task gets ``sig``'s result. Ends the call."""
        _canvas_call("replace", sig)
        raise _Replaced()

    def add_to_chord(self, sig: Signature) -> AsyncResult:
        """Add ``sig`` (one task) to the chord this task is a member of (Celery's ``add_to_chord``)."""
        return AsyncResult(_canvas_call("add_to_chord", sig))

    def _invoke(self, args: list, kwargs: dict) -> Any:
        global _running
        self._request = None
        self._call_args = (args, kwargs)
        _running = self
        try:
            return self(*args, **kwargs)
        except _Replaced:
            return None
        except Ignore:
            _host().ignore()
            return None
        except Reject as r:
            _host().reject(bool(r.requeue))
            return None
        finally:
            self._request = None
            _running = None


def task(*fun: Callable, **options: Any):
    """Declare a task: ``@task`` or ``@task(bind=True, name=..., rate_limit="10/m", max_retries=5, ...)``.

    The options are Celery's ``@app.task`` keyword arguments that the worker
    honours: ``rate_limit``, ``time_limit``, ``soft_time_limit``,
    ``max_retries``, ``default_retry_delay``, ``autoretry_for`` (exception
    classes), ``retry_backoff``, ``retry_backoff_max``, ``retry_jitter``,
    ``acks_late``, ``ignore_result``, ``queue``; plus ``bind`` (the function
    gets the task as ``self``) and ``name`` (default: the function's name).
    """

    def declare(f: Callable) -> Task:
        t = Task(f, **options)
        if t.name in REGISTRY and REGISTRY[t.name].run is not f:
            raise ValueError(f"two tasks are named {t.name!r}")
        REGISTRY[t.name] = t
        return t

    if fun:
        if len(fun) == 1 and callable(fun[0]) and not options:
            return declare(fun[0])
        raise TypeError("use @task or @task(option=value, ...)")
    return declare


class _HostLogHandler(logging.Handler):
    """Sends log records to the worker's log (``host.log``), tagged with the task id by the worker."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from wit_world.imports import celeriac_task_types as types
            from wit_world.imports import host
        except ImportError:
            return
        if record.levelno >= logging.ERROR:
            level = types.LogLevel.ERROR
        elif record.levelno >= logging.WARNING:
            level = types.LogLevel.WARNING
        elif record.levelno >= logging.INFO:
            level = types.LogLevel.INFO
        elif record.levelno >= logging.DEBUG:
            level = types.LogLevel.DEBUG
        else:
            level = types.LogLevel.TRACE
        try:
            host.log(level, self.format(record))
        except Exception:
            self.handleError(record)


def get_task_logger(name: str) -> logging.Logger:
    """A logger whose records go to the worker's log (Celery's ``celery.utils.log.get_task_logger``).

    Every ``logging`` logger reaches the worker too (the handler sits on the
    root logger); the worker's ``--loglevel`` decides what is shown.
    """
    return logging.getLogger(name)


def _install_log_handler() -> None:
    """Route ``logging`` to the worker, only inside a component (plain CPython keeps its own logging)."""
    try:
        import wit_world.imports.host  # noqa: F401  (present only when componentize-py builds the component)
    except ImportError:
        return
    root = logging.getLogger()
    if not any(isinstance(h, _HostLogHandler) for h in root.handlers):
        h = _HostLogHandler()
        h.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        root.addHandler(h)
        root.setLevel(logging.DEBUG)


_install_log_handler()

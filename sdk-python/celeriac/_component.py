"""The component side of the SDK: the ``task`` interface of ``wit/task.wit`` that componentize-py exports.

``celeriac build`` generates an entry module that imports the project's modules
(which declare tasks with ``@task``) and then this module's ``Task`` class,
which componentize-py exports as the ``task`` interface: ``tasks()`` lists the
registry with each task's declared options, ``invoke()`` runs one call and maps
what it raised to the contract's ``raised`` variant.
"""

from __future__ import annotations

import builtins
import json
import os
import traceback
from typing import Any, Optional

from componentize_py_types import Err
from wit_world import exports
# The contract's `types` (the world also holds wasi:http's, hence componentize-py's longer name).
from wit_world.imports import celeriac_task_types as types
# Imported here, at build time, so componentize-py bundles them: a binding module first
# imported inside a call is missing from the component (celeriac.send_task, celeriac.config
# and celeriac.http need them).
from wit_world.imports import canvas as _canvas  # noqa: F401
from wit_world.imports import config as _config  # noqa: F401
from wit_world.imports import outgoing_handler as _outgoing_handler  # noqa: F401
from wit_world.imports import streams as _streams  # noqa: F401
from wit_world.imports import wasi_http_types as _wasi_http_types  # noqa: F401

import celeriac
import celeriac.http  # noqa: F401  (and the standard modules it imports)

_SDK_DIR = os.path.dirname(os.path.abspath(celeriac.__file__))


def _options(t: celeriac.Task) -> types.TaskOptions:
    o = t.options

    def num(key: str) -> Optional[float]:
        v = o.get(key)
        return None if v is None else float(v)

    def count(key: str) -> Optional[int]:
        v = o.get(key)
        if v is None or v is False:
            return None
        return int(v)  # retry_backoff=True is a factor of 1

    def flag(key: str) -> Optional[bool]:
        v = o.get(key)
        return None if v is None else bool(v)

    rate = o.get("rate_limit")
    return types.TaskOptions(
        rate_limit=None if rate is None else str(rate),
        time_limit=num("time_limit"),
        soft_time_limit=num("soft_time_limit"),
        max_retries=count("max_retries"),
        default_retry_delay=num("default_retry_delay"),
        autoretry_for=[c if isinstance(c, str) else c.__name__ for c in o.get("autoretry_for") or ()],
        retry_backoff=count("retry_backoff"),
        retry_backoff_max=count("retry_backoff_max"),
        retry_jitter=flag("retry_jitter"),
        acks_late=flag("acks_late"),
        ignore_result=flag("ignore_result"),
        queue=o.get("queue"),
    )


def _json_arg(a: Any) -> str:
    try:
        return json.dumps(a)
    except (TypeError, ValueError):
        return json.dumps(repr(a))


def _guest_traceback(e: BaseException) -> str:
    """The traceback of ``e`` without the SDK's own frames: the task's file, line and function.

    An exception raised in the SDK itself (a call with the wrong arguments, a
    result JSON cannot encode) has no task frame: only its last line remains.
    """
    tb = e.__traceback__
    while tb is not None and os.path.dirname(os.path.abspath(tb.tb_frame.f_code.co_filename)) == _SDK_DIR:
        tb = tb.tb_next
    if tb is None:
        return "".join(traceback.format_exception_only(type(e), e))
    return "".join(traceback.format_exception(type(e), e, tb))


def _task_error(e: BaseException) -> types.TaskError:
    cls = type(e)
    module = cls.__module__
    builtin = module == "builtins" and getattr(builtins, cls.__name__, None) is cls
    return types.TaskError(
        exc_type=cls.__qualname__ if not builtin else cls.__name__,
        exc_module=None if builtin else module,
        message=str(e),
        args=[_json_arg(a) for a in e.args],
        traceback=_guest_traceback(e),
    )


class Task(exports.Task):
    """The exported ``task`` interface."""

    def tasks(self) -> list[types.TaskInfo]:
        return [types.TaskInfo(name=name, options=_options(t)) for name, t in sorted(celeriac.REGISTRY.items())]

    def invoke(self, name: str, args: str, kwargs: str) -> str:
        t = celeriac.REGISTRY.get(name)
        try:
            if t is None:
                raise LookupError(f"this component has no task {name!r}")
            a = json.loads(args) if args else []
            k = json.loads(kwargs) if kwargs else {}
            if not isinstance(a, list) or not isinstance(k, dict):
                raise TypeError("args must be a JSON array and kwargs a JSON object")
            return json.dumps(t._invoke(a, k))
        except celeriac.Retry as r:
            raise Err(types.Raised_Retry(types.RetryRequest(
                countdown=None if r.countdown is None else float(r.countdown),
                eta=None if r.eta is None else str(r.eta),
                exc=None if r.exc is None else _task_error(r.exc),
                max_retries=r.max_retries,
            )))
        except Exception as e:
            # autoretry_for is applied by the worker, on the class name.
            raise Err(types.Raised_Exception(_task_error(e)))

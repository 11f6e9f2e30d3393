/*
 * celeriac.js: write Celery tasks in JavaScript for a Celeriac worker.
 *
 * `celeriac build` provides this module to a JS project as the package
 * "celeriac" and compiles the project with componentize-qjs (QuickJS) into a
 * component of world `task-component` (wit/task.wit). A project registers its
 * tasks:
 *
 *   import { task, ValueError } from "celeriac";
 *   task("add", (x, y) => x + y, { rateLimit: "10/s" });
 *   task("fail", () => { throw new ValueError("bad value"); });
 *
 * and this module implements the exported interface `task` on top of the
 * registry: arguments arrive as JSON and are spread into the function (a wrong
 * count is a TypeError, as Celery raises for a Python task), the return value
 * is sent back as JSON, and a thrown Error becomes the exception the Python
 * client re-raises: same class name (`TypeError` and the `ValueError` below are
 * Python builtins; other names are kept and come back as
 * celeriac.exceptions.<Name>; a plain `Error` is Python's `Exception`), the
 * message, and the JS stack in `result.traceback`.
 */
import host from "celeriac:task/host@0.2.0";
import tenantConfig from "celeriac:task/config@0.2.0";

const registry = new Map();

/** Python's ValueError: `throw new ValueError("bad value")`. */
export class ValueError extends Error {
  constructor(message, ...rest) {
    super(message);
    this.name = "ValueError";
    this.args = [message, ...rest];
  }
}

/** Python's KeyError. */
export class KeyError extends Error {
  constructor(message, ...rest) {
    super(message);
    this.name = "KeyError";
    this.args = [message, ...rest];
  }
}

/**
 * Registers `fn` as the task `name` (served as `tasks.<name>` from tasks.wasm).
 * `options` are Celery's @app.task keywords in camelCase: rateLimit, timeLimit,
 * softTimeLimit, maxRetries, defaultRetryDelay, autoretryFor, acksLate,
 * ignoreResult, queue; plus `nargs` (the positional argument count when
 * `fn.length` cannot tell, e.g. with default or rest parameters; -1 = any)
 * and `kwargs: true` (keyword arguments are passed as one last object).
 */
export function task(name, fn, options = {}) {
  if (typeof fn !== "function") throw new TypeError(`task ${name}: not a function`);
  registry.set(name, { fn, options });
  return fn;
}

const LEVELS = ["trace", "debug", "info", "warning", "error"];

/** A line in the worker's log: log.info("..."), log.warning("..."), ... */
export const log = Object.fromEntries(
  LEVELS.map((level) => [level, (...parts) => host.log(level, parts.map(String).join(" "))]),
);

// QuickJS has no `console`: console.log and friends write to the worker's log.
if (typeof globalThis.console === "undefined") {
  globalThis.console = {
    log: log.info,
    info: log.info,
    debug: log.debug,
    warn: log.warning,
    error: log.error,
  };
}

/** Celery's self.update_state(state=..., meta=...). */
export function updateState(state, meta = null) {
  host.updateState(state, JSON.stringify(meta));
}

/** Celery's self.request: id, name, retries, eta, expires, rootId, parentId, groupId, hostname, headers. */
export function request() {
  const r = host.request();
  return { ...r, headers: JSON.parse(r.headers) };
}

/**
 * A value of the `[config]` table of this task's tenant (its tenant.toml), `fallback` when the operator
 * set none (or the task belongs to no tenant): `config("api_key")`. The worker never logs it.
 */
export function config(key, fallback = undefined) {
  const value = tenantConfig.get(key);
  return value === undefined || value === null ? fallback : value;
}

/**
 * Celery's `raise self.retry(countdown=..., exc=...)`: `throw retry({ countdown: 5, exc: new ValueError("x") })`.
 * Fields: countdown (seconds), eta (ISO-8601), exc (an Error: raised once retries run out), maxRetries.
 */
export class Retry extends Error {
  constructor({ countdown, eta, exc, maxRetries } = {}) {
    super("Retry");
    this.name = "Retry";
    this.retry = { countdown, eta, exc, maxRetries };
  }
}

export function retry(options = {}) {
  return new Retry(options);
}

function option(value) {
  return value === undefined ? null : value;
}

function taskOptions(o) {
  return {
    rateLimit: option(o.rateLimit),
    timeLimit: option(o.timeLimit),
    softTimeLimit: option(o.softTimeLimit),
    maxRetries: option(o.maxRetries),
    defaultRetryDelay: option(o.defaultRetryDelay),
    autoretryFor: o.autoretryFor || [],
    retryBackoff: option(o.retryBackoff),
    retryBackoffMax: option(o.retryBackoffMax),
    retryJitter: option(o.retryJitter),
    acksLate: option(o.acksLate),
    ignoreResult: option(o.ignoreResult),
    queue: option(o.queue),
  };
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function checkArguments(name, entry, args, kwargs) {
  const keys = Object.keys(kwargs);
  if (keys.length > 0 && !entry.options.kwargs) {
    throw new TypeError(`${name}() got an unexpected keyword argument '${keys[0]}'`);
  }
  // Positional parameters: fn.length, less the keyword-arguments object when the task takes one.
  const nargs = entry.options.nargs ?? Math.max(0, entry.fn.length - (entry.options.kwargs ? 1 : 0));
  if (nargs >= 0 && args.length !== nargs) {
    if (args.length < nargs) {
      throw new TypeError(`${name}() missing ${plural(nargs - args.length, "required positional argument")}`);
    }
    throw new TypeError(
      `${name}() takes ${plural(nargs, "positional argument")} but ${args.length} ${args.length === 1 ? "was" : "were"} given`,
    );
  }
}

/** The JS exception as the WIT task-error record. */
function taskError(e) {
  if (!(e instanceof Error)) {
    const message = typeof e === "string" ? e : JSON.stringify(e) ?? String(e);
    return { excType: "Exception", excModule: null, message, args: null, traceback: null };
  }
  let excType = e.name || "Error";
  if (excType === "Error" && e.constructor && e.constructor.name && e.constructor.name !== "Error") {
    excType = e.constructor.name;
  }
  if (excType === "Error") excType = "Exception";
  const message = String(e.message ?? "");
  const args = Array.isArray(e.args) ? e.args.map((a) => JSON.stringify(a === undefined ? null : a)) : null;
  const stack = typeof e.stack === "string" && e.stack.trim() ? e.stack.replace(/\s+$/, "") : "    at <unknown>";
  // The build puts the project under /app and this module under node_modules/celeriac.
  const frames = stack.replaceAll("/app/", "").replaceAll("/node_modules/celeriac/index.js", "celeriac.js");
  const traceback = `JavaScript stack (most recent call first):\n${frames}\n`;
  return { excType, excModule: null, message, args, traceback };
}

/** The exported interface `task` of wit/task.wit (the build exports it). */
export const exportsForCeleriac = {
  tasks() {
    return [...registry].map(([name, entry]) => ({ name, options: taskOptions(entry.options) }));
  },

  invoke(name, args, kwargs) {
    try {
      const entry = registry.get(name);
      if (!entry) throw Object.assign(new Error(name), { name: "NotRegistered" });
      const positional = JSON.parse(args);
      const keywords = JSON.parse(kwargs);
      checkArguments(name, entry, positional, keywords);
      const call = entry.options.kwargs ? [...positional, keywords] : positional;
      const result = entry.fn(...call);
      if (result instanceof Promise) throw new TypeError(`${name}() returned a Promise: async tasks are not supported`);
      return JSON.stringify(result === undefined ? null : result);
    } catch (e) {
      if (e instanceof Retry) {
        const r = e.retry;
        throw {
          tag: "retry",
          val: {
            countdown: option(r.countdown),
            eta: option(r.eta),
            exc: r.exc === undefined || r.exc === null ? null : taskError(r.exc),
            maxRetries: option(r.maxRetries),
          },
        };
      }
      throw { tag: "exception", val: taskError(e) };
    }
  },
};

// Celeriac example tasks in JavaScript: Celery's First Steps tasks (add, mul,
// xsum), a task that raises ValueError ("fail") and one that traps ("crash").
// Build: celeriac build example-tasks/js -o target/lang-tasks/js/tasks.wasm
import { task, ValueError, log, updateState, request, retry, config } from "celeriac";

task("add", (x, y) => x + y);
task("mul", (x, y) => x * y);
task("xsum", (numbers) => numbers.reduce((total, n) => total + n, 0));

function fail() {
  throw new ValueError("bad value");
}
task("fail", fail, { nargs: -1 });

// An exception class of the task's own keeps its name and arguments:
// the client raises celeriac.exceptions.InvoiceNotFound('no invoice 42', 42).
class InvoiceNotFound extends Error {
  constructor(id) {
    super(`no invoice ${id}`);
    this.name = "InvoiceNotFound";
    this.args = [this.message, id];
  }
}
task("lookup", (id) => {
  throw new InvoiceNotFound(id);
});

// crash(): the JS way to end in a trap. QuickJS turns stack overflows and bad
// calls into catchable errors, so this exhausts memory past the worker's cap:
// the sandbox stops the call (MemoryError, a FAILURE) and the worker carries on.
task(
  "crash",
  () => {
    const hog = [];
    for (;;) hog.push(new Array(1 << 20).fill(1));
  },
  { nargs: -1 },
);

// progress(n): custom states and log lines while it runs; returns its own task id.
task("progress", (n) => {
  for (let i = 1; i <= n; i++) {
    updateState("PROGRESS", { current: i, total: n });
    log.info(`step ${i} of ${n}`);
  }
  return request().id;
});

// flaky(n): asks to be retried until it has been retried n times (max 2 retries).
task(
  "flaky",
  (n) => {
    const { retries } = request();
    if (retries < n) throw retry({ countdown: 0, exc: new ValueError(`attempt ${retries}`) });
    return retries;
  },
  { maxRetries: 2 },
);

// A value of the tenant's [config] (its tenant.toml), "unset" when there is none.
task("setting", (key) => config(key, "unset"));

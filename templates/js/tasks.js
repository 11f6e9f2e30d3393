// A Celeriac task project in JavaScript. Build with `npm install` (once: it
// fetches the compiler, componentize-qjs) and `celeriac build . -o out/tasks.wasm`,
// then serve it: `celeriac worker -A out`. The "celeriac" module is provided by
// `celeriac build`.
import { task } from "celeriac";

// add(x, y) -> x + y (Celery's First Steps task). Options are Celery's, in
// camelCase: task("add", (x, y) => x + y, { rateLimit: "10/s", timeLimit: 30 }).
task("add", (x, y) => x + y);

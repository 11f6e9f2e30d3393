/*
 * A Celeriac task project in C. Build with `celeriac build . -o out/tasks.wasm`
 * (needs clang and wasi-libc), then serve it: `celeriac worker -A out`.
 * celeriac.h (arguments, results, errors) is provided by `celeriac build`.
 */
#include "celeriac.h"

/* add(x, y) -> x + y, for ints (Celery's First Steps task). */
static void add(celeriac_ctx *ctx) {
    int64_t x, y;
    if (!celeriac_arg_int(ctx, 0, &x) || !celeriac_arg_int(ctx, 1, &y)) return; /* TypeError raised */
    celeriac_return_int(ctx, x + y);
}

/* The tasks this component serves: name, function, positional argument count, and
 * options as Celery's @app.task keywords, e.g. {"add", add, 2, .rate_limit = "10/s"}. */
CELERIAC_TASKS(
    {"add", add, 2},
)

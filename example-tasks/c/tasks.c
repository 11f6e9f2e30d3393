/*
 * Celeriac example tasks in C: Celery's First Steps tasks (add, mul, xsum), a
 * task that raises ValueError ("fail") and one that traps ("crash").
 * Build: celeriac build example-tasks/c -o target/lang-tasks/c/tasks.wasm
 */
#include <stdio.h>
#include <stdlib.h>

#include "celeriac.h"

/* add(x, y): ints add as ints, anything numeric as floats (like Python). */
static void add(celeriac_ctx *ctx) {
    const celeriac_value *x = celeriac_arg(ctx, 0), *y = celeriac_arg(ctx, 1);
    if (x->kind == CELERIAC_INT && y->kind == CELERIAC_INT) {
        celeriac_return_int(ctx, x->integer + y->integer);
        return;
    }
    double a, b;
    if (!celeriac_arg_number(ctx, 0, &a) || !celeriac_arg_number(ctx, 1, &b)) return;
    celeriac_return_float(ctx, a + b);
}

static void mul(celeriac_ctx *ctx) {
    const celeriac_value *x = celeriac_arg(ctx, 0), *y = celeriac_arg(ctx, 1);
    if (x->kind == CELERIAC_INT && y->kind == CELERIAC_INT) {
        celeriac_return_int(ctx, x->integer * y->integer);
        return;
    }
    double a, b;
    if (!celeriac_arg_number(ctx, 0, &a) || !celeriac_arg_number(ctx, 1, &b)) return;
    celeriac_return_float(ctx, a * b);
}

/* xsum(numbers): the sum of a list of numbers. */
static void xsum(celeriac_ctx *ctx) {
    const celeriac_value *numbers;
    if (!celeriac_arg_array(ctx, 0, &numbers)) return;
    int64_t total = 0;
    double ftotal = 0;
    bool floats = false;
    for (size_t i = 0; i < numbers->len; i++) {
        const celeriac_value *n = &numbers->items[i];
        if (n->kind == CELERIAC_INT) total += n->integer;
        else if (n->kind == CELERIAC_FLOAT) floats = true, ftotal += n->number;
        else {
            celeriac_raise(ctx, "TypeError", "unsupported operand type(s) for +: 'int' and '%s'",
                           celeriac_type_name(n));
            return;
        }
    }
    if (floats) celeriac_return_float(ctx, ftotal + (double)total);
    else celeriac_return_int(ctx, total);
}

/* scale(x, factor=2): a keyword argument, read with celeriac_kwarg (.kwargs = true). */
static void scale(celeriac_ctx *ctx) {
    int64_t x, factor = 2;
    if (!celeriac_arg_int(ctx, 0, &x)) return;
    const celeriac_value *f = celeriac_arg(ctx, 1);
    if (!f) f = celeriac_kwarg(ctx, "factor");
    if (f && f->kind != CELERIAC_INT) {
        celeriac_raise(ctx, "TypeError", "scale() argument 'factor' must be int, not %s", celeriac_type_name(f));
        return;
    }
    if (f) factor = f->integer;
    celeriac_return_int(ctx, x * factor);
}

/* flaky(n): asks to be retried until it has been retried n times (at most 2 retries). */
static void flaky(celeriac_ctx *ctx) {
    int64_t n;
    if (!celeriac_arg_int(ctx, 0, &n)) return;
    uint32_t retries = celeriac_request_retries(ctx);
    if (retries < n) {
        char message[32];
        snprintf(message, sizeof message, "attempt %u", retries);
        celeriac_log(CELERIAC_INFO, message);
        celeriac_retry(ctx, 0, "ValueError", message);
        return;
    }
    celeriac_return_int(ctx, retries);
}

/* fail(...): raises ValueError("bad value"); the client re-raises ValueError. */
static void fail(celeriac_ctx *ctx) {
    celeriac_raise(ctx, "ValueError", "bad value");
}

/* crash(): a trap (like a Rust panic): the task fails, the worker carries on. */
static void crash(celeriac_ctx *ctx) {
    (void)ctx;
    __builtin_trap();
}

/* setting(key): a value of the tenant's [config] (its tenant.toml), "unset" when there is none. */
static void setting(celeriac_ctx *ctx) {
    const char *key;
    if (!celeriac_arg_string(ctx, 0, &key)) return;
    char *value = celeriac_config(key);
    celeriac_return_string(ctx, value ? value : "unset");
    free(value);
}

CELERIAC_TASKS(
    {"add", add, 2},
    {"mul", mul, 2},
    {"xsum", xsum, 1},
    {"scale", scale, 2, .kwargs = true},
    {"flaky", flaky, 1, .max_retries = 2},
    {"fail", fail, -1},
    {"setting", setting, 1},
    {"crash", crash, -1},
)

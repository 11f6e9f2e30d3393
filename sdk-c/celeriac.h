/*
 * celeriac.h: write Celery tasks in C (and Zig) for a Celeriac worker.
 *
 * A task component exports `task.tasks` and `task.invoke` of wit/task.wit
 * (world `task-component`). `celeriac build` generates the C bindings for that
 * world with wit-bindgen (task_component.h/.c), compiles them with your code and
 * one translation unit that defines CELERIAC_IMPLEMENTATION before including
 * this header, and encodes the component. This header is the layer between the
 * bindings and your code:
 *
 *   - arguments: Celery sends a JSON array (args) and a JSON object (kwargs);
 *     a small JSON reader turns them into celeriac_value trees, and
 *     celeriac_arg_int/number/string/array check their types the way Python
 *     would (a wrong type or a wrong argument count is a TypeError, as Celery
 *     raises for a Python task);
 *   - results: celeriac_return_int/float/string/bool/null/json write the JSON
 *     result;
 *   - errors: celeriac_raise(ctx, "ValueError", "bad %s", what) raises an
 *     exception the Python client re-raises as the same class (builtins stay
 *     builtins), with a traceback line naming the C file, line and function;
 *   - the host: celeriac_log, celeriac_update_state, celeriac_config, celeriac_request_id/retries,
 *     and celeriac_retry (Celery's self.retry).
 *
 * A task is `void fn(celeriac_ctx *ctx)`; the table of tasks is declared once:
 *
 *   #include "celeriac.h"
 *   static void add(celeriac_ctx *ctx) {
 *       int64_t x, y;
 *       if (!celeriac_arg_int(ctx, 0, &x) || !celeriac_arg_int(ctx, 1, &y)) return;
 *       celeriac_return_int(ctx, x + y);
 *   }
 *   CELERIAC_TASKS({"add", add, 2, .rate_limit = "10/s"})
 *
 * Every call runs in a fresh sandboxed instance that is thrown away afterwards,
 * so nothing here frees what it allocates: the instance's memory goes with it.
 */
#ifndef CELERIAC_H
#define CELERIAC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- JSON values ---------------------------------------------------------- */

typedef enum celeriac_kind {
    CELERIAC_NULL,
    CELERIAC_BOOL,
    CELERIAC_INT,   /* a JSON number without fraction or exponent that fits int64 */
    CELERIAC_FLOAT, /* any other JSON number */
    CELERIAC_STRING,
    CELERIAC_ARRAY,
    CELERIAC_OBJECT,
} celeriac_kind;

typedef struct celeriac_value celeriac_value;
struct celeriac_value {
    celeriac_kind kind;
    bool boolean;
    int64_t integer;
    double number;            /* set for CELERIAC_INT too */
    const char *string;       /* NUL-terminated, UTF-8 (may also contain NULs: see len) */
    size_t len;               /* string length in bytes, or item count of an array/object */
    celeriac_value *items;    /* array items, or object values */
    const char **keys;        /* object keys (NUL-terminated) */
};

/* ---- one call -------------------------------------------------------------- */

typedef struct celeriac_ctx celeriac_ctx;

/* A task body: reads its arguments from ctx, then returns a result or raises. */
typedef void (*celeriac_fn)(celeriac_ctx *ctx);

/* One task of the table: its name, body, positional argument count (-1: any),
 * and the options it declares (Celery's @app.task(...) keywords; 0/NULL = unset).
 * Keyword arguments are a TypeError unless `kwargs` is set: then the task reads
 * them with celeriac_kwarg, and up to `nargs` positional arguments may be given. */
typedef struct celeriac_task {
    const char *name;
    celeriac_fn run;
    int nargs;
    const char *rate_limit;     /* e.g. "10/m" */
    double time_limit;          /* seconds */
    double soft_time_limit;     /* seconds */
    const char *queue;
    bool acks_late;
    bool ignore_result;
    bool kwargs;
    unsigned max_retries;       /* 0: Celery's default (3) */
} celeriac_task;

/* The task table: CELERIAC_TASKS defines it in C; a Zig program exports it. */
const celeriac_task *celeriac_task_table(size_t *count);

/* The task being run, e.g. "add". */
const char *celeriac_task_name(const celeriac_ctx *ctx);
/* The positional arguments (a JSON array) and keyword arguments (a JSON object). */
const celeriac_value *celeriac_args(const celeriac_ctx *ctx);
const celeriac_value *celeriac_kwargs(const celeriac_ctx *ctx);

/* Typed access to positional argument i. On a wrong type these raise TypeError
 * and return false: the task should then return at once. */
bool celeriac_arg_int(celeriac_ctx *ctx, size_t i, int64_t *out);
bool celeriac_arg_number(celeriac_ctx *ctx, size_t i, double *out); /* int or float */
bool celeriac_arg_string(celeriac_ctx *ctx, size_t i, const char **out);
bool celeriac_arg_array(celeriac_ctx *ctx, size_t i, const celeriac_value **out);
const celeriac_value *celeriac_arg(const celeriac_ctx *ctx, size_t i);
/* A keyword argument, or NULL when it was not given. */
const celeriac_value *celeriac_kwarg(const celeriac_ctx *ctx, const char *name);
/* Python's type name of a value ("int", "float", "str", "list", "dict", ...). */
const char *celeriac_type_name(const celeriac_value *v);

/* Results: the last one set wins. A task that sets none returns None. */
void celeriac_return_int(celeriac_ctx *ctx, int64_t v);
void celeriac_return_float(celeriac_ctx *ctx, double v);
void celeriac_return_bool(celeriac_ctx *ctx, bool v);
void celeriac_return_null(celeriac_ctx *ctx);
void celeriac_return_string(celeriac_ctx *ctx, const char *s);
void celeriac_return_json(celeriac_ctx *ctx, const char *json); /* already JSON text */
void celeriac_return_value(celeriac_ctx *ctx, const celeriac_value *v);

/* Raise an exception of class exc_type (e.g. "ValueError", or a name of your
 * own, reported as celeriac.exceptions.<name>). The traceback line names the
 * file, line and function given. Use the celeriac_raise macro from C. */
void celeriac_raise_at(celeriac_ctx *ctx, const char *exc_type, const char *file, int line, const char *func,
                       const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* The same, with a plain message (no format): what Zig calls. */
void celeriac_raise_message(celeriac_ctx *ctx, const char *exc_type, const char *message, const char *file,
                            int line, const char *func);
#define celeriac_raise(ctx, exc_type, ...) \
    celeriac_raise_at((ctx), (exc_type), __FILE__, __LINE__, __func__, __VA_ARGS__)
/* Celery's `raise self.retry(countdown=..., exc=...)`: the call ends asking for a
 * retry in `countdown` seconds (< 0: the task's default retry delay); once the
 * retries run out it fails with exc_type(message) (exc_type NULL: Celery's
 * MaxRetriesExceededError). Return from the task after calling it. */
void celeriac_retry(celeriac_ctx *ctx, double countdown, const char *exc_type, const char *message);
/* Celery's self.request: the task id and how many times it has been retried. */
const char *celeriac_request_id(celeriac_ctx *ctx);
uint32_t celeriac_request_retries(celeriac_ctx *ctx);

/* Whether the call has raised already. */
bool celeriac_raised(const celeriac_ctx *ctx);

/* The host: a log line in the worker's log, and a custom state (Celery's
 * self.update_state(state=..., meta=...); meta is JSON text). */
enum { CELERIAC_TRACE, CELERIAC_DEBUG, CELERIAC_INFO, CELERIAC_WARNING, CELERIAC_ERROR };
void celeriac_log(int level, const char *message);
void celeriac_update_state(const char *state, const char *meta_json);
/* A value of the [config] table of the task's tenant (its tenant.toml): a
 * malloc'd string the caller frees, or NULL when the operator set none. */
char *celeriac_config(const char *key);

/* JSON: parse text into a value (NULL on a syntax error) and write a value. */
celeriac_value *celeriac_json_parse(const char *text, size_t len);
char *celeriac_json_write(const celeriac_value *v);

/* Declares the task table: CELERIAC_TASKS({"add", add, 2}, {"mul", mul, 2}) */
#define CELERIAC_TASKS(...)                                                          \
    static const celeriac_task celeriac_tasks_[] = {__VA_ARGS__};                    \
    const celeriac_task *celeriac_task_table(size_t *count) {                        \
        *count = sizeof(celeriac_tasks_) / sizeof(celeriac_tasks_[0]);              \
        return celeriac_tasks_;                                                      \
    }

#ifdef __cplusplus
}
#endif

/* ========================================================================== */
/* Implementation: compiled once per component (celeriac build does this).    */
/* ========================================================================== */
#ifdef CELERIAC_IMPLEMENTATION

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "task_component.h"

/* Errors the SDK itself raises (argument checks) name the task, not this file's path. */
#undef celeriac_raise
#define celeriac_raise(ctx, exc_type, ...) \
    celeriac_raise_at((ctx), (exc_type), "celeriac.h", __LINE__, (ctx)->task->name, __VA_ARGS__)

struct celeriac_ctx {
    const celeriac_task *task;
    celeriac_value *args;
    celeriac_value *kwargs;
    char *result;           /* JSON text, or NULL for None */
    bool raised;
    celeriac_task_types_task_error_t error;
    bool retry;
    celeriac_task_types_retry_request_t retry_request;
    bool have_request;
    celeriac_task_host_request_context_t request;
    char *request_id;
};

/* ---- a growable string ---------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
} celeriac_buf_;

static void celeriac_buf_put_(celeriac_buf_ *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *grown = (char *)realloc(b->buf, cap);
        if (!grown) __builtin_trap();
        b->buf = grown;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = 0;
}
static void celeriac_buf_str_(celeriac_buf_ *b, const char *s) { celeriac_buf_put_(b, s, strlen(s)); }
static void celeriac_buf_printf_(celeriac_buf_ *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* vsnprintf into `small` (`cap` bytes), or into a malloc'd buffer when the text
 * does not fit: the caller frees the result when it is not `small`. A format
 * error gives "". `*len` is the text's length. */
static char *celeriac_vformat_(char *small, size_t cap, size_t *len, const char *fmt, va_list ap) {
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(small, cap, fmt, ap);
    if (n < 0) {
        va_end(again);
        small[0] = 0;
        *len = 0;
        return small;
    }
    *len = (size_t)n;
    if ((size_t)n < cap) {
        va_end(again);
        return small;
    }
    char *big = (char *)malloc((size_t)n + 1);
    if (!big) __builtin_trap();
    vsnprintf(big, (size_t)n + 1, fmt, again);
    va_end(again);
    return big;
}
static void celeriac_buf_printf_(celeriac_buf_ *b, const char *fmt, ...) {
    char small[128];
    size_t n;
    va_list ap;
    va_start(ap, fmt);
    char *text = celeriac_vformat_(small, sizeof small, &n, fmt, ap);
    va_end(ap);
    celeriac_buf_put_(b, text, n);
    if (text != small) free(text);
}

/* ---- JSON reader ----------------------------------------------------------- */

typedef struct {
    const char *p, *end;
} celeriac_reader_;

static void celeriac_skip_ws_(celeriac_reader_ *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static bool celeriac_parse_value_(celeriac_reader_ *r, celeriac_value *out, int depth);

static int celeriac_hex4_(celeriac_reader_ *r) {
    if (r->end - r->p < 4) return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = r->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    r->p += 4;
    return v;
}

static void celeriac_utf8_(celeriac_buf_ *b, uint32_t cp) {
    char s[4];
    size_t n;
    if (cp < 0x80) { s[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { s[0] = (char)(0xC0 | (cp >> 6)); s[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        s[0] = (char)(0xE0 | (cp >> 12)); s[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); s[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        s[0] = (char)(0xF0 | (cp >> 18)); s[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        s[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); s[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    celeriac_buf_put_(b, s, n);
}

static bool celeriac_parse_string_(celeriac_reader_ *r, const char **out, size_t *len) {
    if (r->p >= r->end || *r->p != '"') return false;
    r->p++;
    celeriac_buf_ b = {0};
    celeriac_buf_put_(&b, "", 0);
    while (r->p < r->end && *r->p != '"') {
        const char *run = r->p;
        while (r->p < r->end && *r->p != '"' && *r->p != '\\') r->p++;
        celeriac_buf_put_(&b, run, (size_t)(r->p - run));
        if (r->p < r->end && *r->p == '\\') {
            if (++r->p >= r->end) return false;
            char c = *r->p++;
            switch (c) {
            case '"': celeriac_buf_put_(&b, "\"", 1); break;
            case '\\': celeriac_buf_put_(&b, "\\", 1); break;
            case '/': celeriac_buf_put_(&b, "/", 1); break;
            case 'b': celeriac_buf_put_(&b, "\b", 1); break;
            case 'f': celeriac_buf_put_(&b, "\f", 1); break;
            case 'n': celeriac_buf_put_(&b, "\n", 1); break;
            case 'r': celeriac_buf_put_(&b, "\r", 1); break;
            case 't': celeriac_buf_put_(&b, "\t", 1); break;
            case 'u': {
                int cp = celeriac_hex4_(r);
                if (cp < 0) return false;
                if (cp >= 0xD800 && cp <= 0xDBFF && r->end - r->p >= 6 && r->p[0] == '\\' && r->p[1] == 'u') {
                    r->p += 2;
                    int lo = celeriac_hex4_(r);
                    if (lo < 0xDC00 || lo > 0xDFFF) return false;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                celeriac_utf8_(&b, (uint32_t)cp);
                break;
            }
            default: return false;
            }
        }
    }
    if (r->p >= r->end) return false;
    r->p++; /* closing quote */
    *out = b.buf;
    *len = b.len;
    return true;
}

static bool celeriac_parse_number_(celeriac_reader_ *r, celeriac_value *out) {
    const char *start = r->p;
    bool integral = true;
    if (r->p < r->end && *r->p == '-') r->p++;
    while (r->p < r->end && ((*r->p >= '0' && *r->p <= '9') || *r->p == '.' || *r->p == 'e' || *r->p == 'E' ||
                             *r->p == '+' || *r->p == '-')) {
        if (*r->p == '.' || *r->p == 'e' || *r->p == 'E') integral = false;
        r->p++;
    }
    size_t n = (size_t)(r->p - start);
    if (n == 0 || n > 400) return false;
    char text[401];
    memcpy(text, start, n);
    text[n] = 0;
    char *end = NULL;
    if (integral) {
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (*end == 0 && errno == 0) {
            out->kind = CELERIAC_INT;
            out->integer = v;
            out->number = (double)v;
            return true;
        }
    }
    double d = strtod(text, &end);
    if (*end != 0) return false;
    out->kind = CELERIAC_FLOAT;
    out->number = d;
    return true;
}

static bool celeriac_literal_(celeriac_reader_ *r, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) return false;
    r->p += n;
    return true;
}

static bool celeriac_parse_value_(celeriac_reader_ *r, celeriac_value *out, int depth) {
    memset(out, 0, sizeof *out);
    if (depth > 200) return false;
    celeriac_skip_ws_(r);
    if (r->p >= r->end) return false;
    char c = *r->p;
    if (c == 'n') return out->kind = CELERIAC_NULL, celeriac_literal_(r, "null");
    if (c == 't') return out->kind = CELERIAC_BOOL, out->boolean = true, celeriac_literal_(r, "true");
    if (c == 'f') return out->kind = CELERIAC_BOOL, celeriac_literal_(r, "false");
    if (c == '"') return out->kind = CELERIAC_STRING, celeriac_parse_string_(r, &out->string, &out->len);
    if (c == '[' || c == '{') {
        bool object = c == '{';
        char close = object ? '}' : ']';
        out->kind = object ? CELERIAC_OBJECT : CELERIAC_ARRAY;
        r->p++;
        size_t cap = 0;
        for (;;) {
            celeriac_skip_ws_(r);
            if (r->p < r->end && *r->p == close && out->len == 0) {
                r->p++;
                return true;
            }
            if (out->len == cap) {
                cap = cap ? cap * 2 : 4;
                out->items = (celeriac_value *)realloc(out->items, cap * sizeof *out->items);
                if (object) out->keys = (const char **)realloc((void *)out->keys, cap * sizeof *out->keys);
                if (!out->items || (object && !out->keys)) __builtin_trap();
            }
            if (object) {
                size_t klen;
                if (!celeriac_parse_string_(r, &out->keys[out->len], &klen)) return false;
                celeriac_skip_ws_(r);
                if (r->p >= r->end || *r->p != ':') return false;
                r->p++;
            }
            if (!celeriac_parse_value_(r, &out->items[out->len], depth + 1)) return false;
            out->len++;
            celeriac_skip_ws_(r);
            if (r->p < r->end && *r->p == ',') { r->p++; continue; }
            if (r->p < r->end && *r->p == close) { r->p++; return true; }
            return false;
        }
    }
    return celeriac_parse_number_(r, out);
}

celeriac_value *celeriac_json_parse(const char *text, size_t len) {
    celeriac_reader_ r = {text, text + len};
    celeriac_value *v = (celeriac_value *)calloc(1, sizeof *v);
    if (!v || !celeriac_parse_value_(&r, v, 0)) return NULL;
    celeriac_skip_ws_(&r);
    return r.p == r.end ? v : NULL;
}

/* ---- JSON writer ----------------------------------------------------------- */

static void celeriac_write_string_(celeriac_buf_ *b, const char *s, size_t n) {
    celeriac_buf_put_(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') celeriac_buf_put_(b, "\\\"", 2);
        else if (c == '\\') celeriac_buf_put_(b, "\\\\", 2);
        else if (c == '\n') celeriac_buf_put_(b, "\\n", 2);
        else if (c == '\r') celeriac_buf_put_(b, "\\r", 2);
        else if (c == '\t') celeriac_buf_put_(b, "\\t", 2);
        else if (c < 0x20) celeriac_buf_printf_(b, "\\u%04x", c);
        else celeriac_buf_put_(b, (const char *)&s[i], 1);
    }
    celeriac_buf_put_(b, "\"", 1);
}

static void celeriac_write_float_(celeriac_buf_ *b, double d) {
    if (isnan(d)) { celeriac_buf_str_(b, "NaN"); return; }
    if (isinf(d)) { celeriac_buf_str_(b, d > 0 ? "Infinity" : "-Infinity"); return; }
    char text[40];
    /* The shortest text that reads back as the same double, like Python's repr. */
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(text, sizeof text, "%.*g", precision, d);
        if (strtod(text, NULL) == d) break;
    }
    celeriac_buf_str_(b, text);
    if (!strpbrk(text, ".eE")) celeriac_buf_str_(b, ".0");
}

static void celeriac_write_value_(celeriac_buf_ *b, const celeriac_value *v) {
    switch (v->kind) {
    case CELERIAC_NULL: celeriac_buf_str_(b, "null"); break;
    case CELERIAC_BOOL: celeriac_buf_str_(b, v->boolean ? "true" : "false"); break;
    case CELERIAC_INT: celeriac_buf_printf_(b, "%lld", (long long)v->integer); break;
    case CELERIAC_FLOAT: celeriac_write_float_(b, v->number); break;
    case CELERIAC_STRING: celeriac_write_string_(b, v->string, v->len); break;
    case CELERIAC_ARRAY:
    case CELERIAC_OBJECT:
        celeriac_buf_str_(b, v->kind == CELERIAC_ARRAY ? "[" : "{");
        for (size_t i = 0; i < v->len; i++) {
            if (i) celeriac_buf_str_(b, ", ");
            if (v->kind == CELERIAC_OBJECT) {
                celeriac_write_string_(b, v->keys[i], strlen(v->keys[i]));
                celeriac_buf_str_(b, ": ");
            }
            celeriac_write_value_(b, &v->items[i]);
        }
        celeriac_buf_str_(b, v->kind == CELERIAC_ARRAY ? "]" : "}");
        break;
    }
}

char *celeriac_json_write(const celeriac_value *v) {
    celeriac_buf_ b = {0};
    celeriac_write_value_(&b, v);
    return b.buf;
}

/* ---- arguments ------------------------------------------------------------- */

const char *celeriac_type_name(const celeriac_value *v) {
    if (!v) return "NoneType";
    switch (v->kind) {
    case CELERIAC_NULL: return "NoneType";
    case CELERIAC_BOOL: return "bool";
    case CELERIAC_INT: return "int";
    case CELERIAC_FLOAT: return "float";
    case CELERIAC_STRING: return "str";
    case CELERIAC_ARRAY: return "list";
    case CELERIAC_OBJECT: return "dict";
    }
    return "object";
}

const char *celeriac_task_name(const celeriac_ctx *ctx) { return ctx->task->name; }
const celeriac_value *celeriac_args(const celeriac_ctx *ctx) { return ctx->args; }
const celeriac_value *celeriac_kwargs(const celeriac_ctx *ctx) { return ctx->kwargs; }
bool celeriac_raised(const celeriac_ctx *ctx) { return ctx->raised; }

const celeriac_value *celeriac_arg(const celeriac_ctx *ctx, size_t i) {
    return i < ctx->args->len ? &ctx->args->items[i] : NULL;
}

const celeriac_value *celeriac_kwarg(const celeriac_ctx *ctx, const char *name) {
    for (size_t i = 0; i < ctx->kwargs->len; i++)
        if (strcmp(ctx->kwargs->keys[i], name) == 0) return &ctx->kwargs->items[i];
    return NULL;
}

static bool celeriac_wrong_type_(celeriac_ctx *ctx, size_t i, const char *want) {
    const celeriac_value *v = celeriac_arg(ctx, i);
    if (!v)
        celeriac_raise_at(ctx, "TypeError", "celeriac.h", __LINE__, ctx->task->name,
                          "%s() missing required positional argument %zu", ctx->task->name, i + 1);
    else
        celeriac_raise_at(ctx, "TypeError", "celeriac.h", __LINE__, ctx->task->name,
                          "%s() argument %zu must be %s, not %s", ctx->task->name, i + 1, want,
                          celeriac_type_name(v));
    return false;
}

bool celeriac_arg_int(celeriac_ctx *ctx, size_t i, int64_t *out) {
    const celeriac_value *v = celeriac_arg(ctx, i);
    if (!v || v->kind != CELERIAC_INT) return celeriac_wrong_type_(ctx, i, "int");
    *out = v->integer;
    return true;
}

bool celeriac_arg_number(celeriac_ctx *ctx, size_t i, double *out) {
    const celeriac_value *v = celeriac_arg(ctx, i);
    if (!v || (v->kind != CELERIAC_INT && v->kind != CELERIAC_FLOAT))
        return celeriac_wrong_type_(ctx, i, "int or float");
    *out = v->number;
    return true;
}

bool celeriac_arg_string(celeriac_ctx *ctx, size_t i, const char **out) {
    const celeriac_value *v = celeriac_arg(ctx, i);
    if (!v || v->kind != CELERIAC_STRING) return celeriac_wrong_type_(ctx, i, "str");
    *out = v->string;
    return true;
}

bool celeriac_arg_array(celeriac_ctx *ctx, size_t i, const celeriac_value **out) {
    const celeriac_value *v = celeriac_arg(ctx, i);
    if (!v || v->kind != CELERIAC_ARRAY) return celeriac_wrong_type_(ctx, i, "list");
    *out = v;
    return true;
}

/* ---- results --------------------------------------------------------------- */

void celeriac_return_json(celeriac_ctx *ctx, const char *json) { ctx->result = strdup(json); }
void celeriac_return_null(celeriac_ctx *ctx) { ctx->result = NULL; }
void celeriac_return_value(celeriac_ctx *ctx, const celeriac_value *v) { ctx->result = celeriac_json_write(v); }

void celeriac_return_int(celeriac_ctx *ctx, int64_t v) {
    celeriac_value value = {.kind = CELERIAC_INT, .integer = v, .number = (double)v};
    celeriac_return_value(ctx, &value);
}

void celeriac_return_float(celeriac_ctx *ctx, double v) {
    celeriac_value value = {.kind = CELERIAC_FLOAT, .number = v};
    celeriac_return_value(ctx, &value);
}

void celeriac_return_bool(celeriac_ctx *ctx, bool v) {
    celeriac_value value = {.kind = CELERIAC_BOOL, .boolean = v};
    celeriac_return_value(ctx, &value);
}

void celeriac_return_string(celeriac_ctx *ctx, const char *s) {
    celeriac_value value = {.kind = CELERIAC_STRING, .string = s, .len = strlen(s)};
    celeriac_return_value(ctx, &value);
}

/* ---- errors ---------------------------------------------------------------- */

static void celeriac_string_(task_component_string_t *out, const char *s) {
    task_component_string_dup(out, s);
}

void celeriac_raise_message(celeriac_ctx *ctx, const char *exc_type, const char *message, const char *file,
                            int line, const char *func) {
    if (ctx->raised) return; /* the first exception wins, like an uncaught raise */
    ctx->raised = true;
    celeriac_task_types_task_error_t *e = &ctx->error;
    memset(e, 0, sizeof *e);
    celeriac_string_(&e->exc_type, exc_type);
    celeriac_string_(&e->message, message);
    /* exc.args = (message,) */
    celeriac_value arg = {.kind = CELERIAC_STRING, .string = message, .len = strlen(message)};
    e->args.is_some = true;
    e->args.val.len = 1;
    e->args.val.ptr = (task_component_string_t *)calloc(1, sizeof(task_component_string_t));
    if (!e->args.val.ptr) __builtin_trap();
    celeriac_string_(&e->args.val.ptr[0], celeriac_json_write(&arg));
    /* A Python-shaped traceback: the worker appends it to its own. */
    celeriac_buf_ tb = {0};
    celeriac_buf_printf_(&tb, "  File \"%s\", line %d, in %s\n", file ? file : "?", line, func ? func : "?");
    e->traceback.is_some = true;
    celeriac_string_(&e->traceback.val, tb.buf);
}

void celeriac_raise_at(celeriac_ctx *ctx, const char *exc_type, const char *file, int line, const char *func,
                       const char *fmt, ...) {
    char small[256];
    size_t n;
    va_list ap;
    va_start(ap, fmt);
    char *message = celeriac_vformat_(small, sizeof small, &n, fmt, ap);
    va_end(ap);
    celeriac_raise_message(ctx, exc_type, message, file, line, func);
    if (message != small) free(message);
}

/* ---- retries and the request ------------------------------------------------- */

void celeriac_retry(celeriac_ctx *ctx, double countdown, const char *exc_type, const char *message) {
    if (ctx->raised || ctx->retry) return;
    celeriac_task_types_retry_request_t *r = &ctx->retry_request;
    memset(r, 0, sizeof *r);
    r->countdown.is_some = countdown >= 0;
    r->countdown.val = countdown;
    if (exc_type) {
        /* Build the exception as a raise would, then take it over as the retry's cause. */
        celeriac_raise_message(ctx, exc_type, message ? message : "", "celeriac.h", __LINE__, ctx->task->name);
        ctx->raised = false;
        r->exc.is_some = true;
        r->exc.val = ctx->error;
    }
    ctx->retry = true;
}

static void celeriac_fetch_request_(celeriac_ctx *ctx) {
    if (ctx->have_request) return;
    celeriac_task_host_request(&ctx->request);
    ctx->have_request = true;
    ctx->request_id = (char *)malloc(ctx->request.id.len + 1);
    if (!ctx->request_id) __builtin_trap();
    memcpy(ctx->request_id, ctx->request.id.ptr, ctx->request.id.len);
    ctx->request_id[ctx->request.id.len] = 0;
}

const char *celeriac_request_id(celeriac_ctx *ctx) {
    celeriac_fetch_request_(ctx);
    return ctx->request_id;
}

uint32_t celeriac_request_retries(celeriac_ctx *ctx) {
    celeriac_fetch_request_(ctx);
    return ctx->request.retries;
}

/* ---- the host -------------------------------------------------------------- */

void celeriac_log(int level, const char *message) {
    task_component_string_t m;
    task_component_string_set(&m, message);
    celeriac_task_host_log((celeriac_task_host_log_level_t)level, &m);
}

void celeriac_update_state(const char *state, const char *meta_json) {
    task_component_string_t s, m;
    task_component_string_set(&s, state);
    task_component_string_set(&m, meta_json ? meta_json : "null");
    celeriac_task_host_update_state(&s, &m);
}

char *celeriac_config(const char *key) {
    task_component_string_t k, value;
    task_component_string_set(&k, key);
    if (!celeriac_task_config_get(&k, &value)) return NULL;
    char *out = (char *)malloc(value.len + 1);
    if (!out) __builtin_trap();
    memcpy(out, value.ptr, value.len);
    out[value.len] = 0;
    task_component_string_free(&value);
    return out;
}

/* ---- the exports of wit/task.wit ------------------------------------------- */

static void celeriac_option_string_(task_component_option_string_t *out, const char *s) {
    out->is_some = s != NULL;
    if (s) celeriac_string_(&out->val, s);
}

void exports_celeriac_task_task_tasks(exports_celeriac_task_task_list_task_info_t *ret) {
    size_t count = 0;
    const celeriac_task *table = celeriac_task_table(&count);
    ret->len = count;
    ret->ptr = (exports_celeriac_task_task_task_info_t *)calloc(count ? count : 1, sizeof *ret->ptr);
    if (!ret->ptr) __builtin_trap();
    for (size_t i = 0; i < count; i++) {
        const celeriac_task *t = &table[i];
        exports_celeriac_task_task_task_info_t *info = &ret->ptr[i];
        celeriac_string_(&info->name, t->name);
        celeriac_option_string_(&info->options.rate_limit, t->rate_limit);
        celeriac_option_string_(&info->options.queue, t->queue);
        info->options.time_limit.is_some = t->time_limit > 0;
        info->options.time_limit.val = t->time_limit;
        info->options.soft_time_limit.is_some = t->soft_time_limit > 0;
        info->options.soft_time_limit.val = t->soft_time_limit;
        info->options.acks_late.is_some = t->acks_late;
        info->options.acks_late.val = t->acks_late;
        info->options.ignore_result.is_some = t->ignore_result;
        info->options.ignore_result.val = t->ignore_result;
        info->options.max_retries.is_some = t->max_retries > 0;
        info->options.max_retries.val = t->max_retries;
    }
}

static void celeriac_plural_(char *out, size_t size, long n, const char *word) {
    snprintf(out, size, "%ld %s%s", n, word, n == 1 ? "" : "s");
}

bool exports_celeriac_task_task_invoke(task_component_string_t *name, task_component_string_t *args,
                                       task_component_string_t *kwargs, task_component_string_t *ret,
                                       exports_celeriac_task_task_raised_t *err) {
    size_t count = 0;
    const celeriac_task *table = celeriac_task_table(&count);
    celeriac_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    static const celeriac_task unknown = {"?", NULL, -1};
    ctx.task = &unknown;
    for (size_t i = 0; i < count; i++)
        if (strlen(table[i].name) == name->len && memcmp(table[i].name, name->ptr, name->len) == 0) ctx.task = &table[i];
    ctx.args = celeriac_json_parse((const char *)args->ptr, args->len);
    ctx.kwargs = celeriac_json_parse((const char *)kwargs->ptr, kwargs->len);
    if (!ctx.task->run) {
        celeriac_raise(&ctx, "NotRegistered", "%.*s", (int)name->len, (const char *)name->ptr);
    } else if (!ctx.args || ctx.args->kind != CELERIAC_ARRAY || !ctx.kwargs || ctx.kwargs->kind != CELERIAC_OBJECT) {
        celeriac_raise(&ctx, "TypeError", "%s() arguments are not a JSON array and object", ctx.task->name);
    } else if (ctx.kwargs->len > 0 && !ctx.task->kwargs) {
        celeriac_raise(&ctx, "TypeError", "%s() got an unexpected keyword argument '%s'", ctx.task->name,
                       ctx.kwargs->keys[0]);
    } else if (ctx.task->nargs >= 0 && (size_t)ctx.task->nargs != ctx.args->len &&
               !(ctx.task->kwargs && ctx.args->len < (size_t)ctx.task->nargs)) {
        char want[48];
        celeriac_plural_(want, sizeof want, ctx.task->nargs, "positional argument");
        celeriac_raise(&ctx, "TypeError", "%s() takes %s but %zu %s given", ctx.task->name, want, ctx.args->len,
                       ctx.args->len == 1 ? "was" : "were");
    } else {
        ctx.task->run(&ctx);
    }
    if (ctx.retry && !ctx.raised) {
        err->tag = CELERIAC_TASK_TYPES_RAISED_RETRY;
        err->val.retry = ctx.retry_request;
        return false;
    }
    if (ctx.raised) {
        err->tag = CELERIAC_TASK_TYPES_RAISED_EXCEPTION;
        err->val.exception = ctx.error;
        return false;
    }
    celeriac_string_(ret, ctx.result ? ctx.result : "null");
    return true;
}

#endif /* CELERIAC_IMPLEMENTATION */
#endif /* CELERIAC_H */

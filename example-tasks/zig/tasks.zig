//! Celeriac example tasks in Zig: Celery's First Steps tasks (add, mul, xsum),
//! a task that raises ValueError ("fail") and one that traps ("crash"), on top
//! of the C SDK (sdk-c/celeriac.h) and the C bindings `celeriac build` generates.
//! Build: celeriac build example-tasks/zig -o target/lang-tasks/zig/tasks.wasm
const std = @import("std");
const c = @import("celeriac");

const Ctx = ?*c.celeriac_ctx;

/// add(x, y): ints add as ints, other numbers as floats (like Python).
fn add(ctx: Ctx) callconv(.c) void {
    binary(ctx, struct {
        fn int(x: i64, y: i64) i64 {
            return x +% y;
        }
        fn float(x: f64, y: f64) f64 {
            return x + y;
        }
    });
}

fn mul(ctx: Ctx) callconv(.c) void {
    binary(ctx, struct {
        fn int(x: i64, y: i64) i64 {
            return x *% y;
        }
        fn float(x: f64, y: f64) f64 {
            return x * y;
        }
    });
}

fn binary(ctx: Ctx, comptime op: type) void {
    const x = c.celeriac_arg(ctx, 0);
    const y = c.celeriac_arg(ctx, 1);
    if (x.*.kind == c.CELERIAC_INT and y.*.kind == c.CELERIAC_INT) {
        return c.celeriac_return_int(ctx, op.int(x.*.integer, y.*.integer));
    }
    var a: f64 = 0;
    var b: f64 = 0;
    if (!c.celeriac_arg_number(ctx, 0, &a) or !c.celeriac_arg_number(ctx, 1, &b)) return;
    c.celeriac_return_float(ctx, op.float(a, b));
}

/// xsum(numbers): the sum of a list of numbers.
fn xsum(ctx: Ctx) callconv(.c) void {
    var numbers: [*c]const c.celeriac_value = null;
    if (!c.celeriac_arg_array(ctx, 0, &numbers)) return;
    var total: i64 = 0;
    var ftotal: f64 = 0;
    var floats = false;
    for (numbers.*.items[0..numbers.*.len]) |n| {
        switch (n.kind) {
            c.CELERIAC_INT => total +%= n.integer,
            c.CELERIAC_FLOAT => {
                floats = true;
                ftotal += n.number;
            },
            else => return raise(ctx, "TypeError", "unsupported operand type(s) for +", @src()),
        }
    }
    if (floats) c.celeriac_return_float(ctx, ftotal + @as(f64, @floatFromInt(total))) else c.celeriac_return_int(ctx, total);
}

/// fail(...): raises ValueError("bad value"); the client re-raises ValueError.
fn fail(ctx: Ctx) callconv(.c) void {
    raise(ctx, "ValueError", "bad value", @src());
}

/// crash(): a trap: the task fails, the worker carries on.
fn crash(_: Ctx) callconv(.c) void {
    @trap();
}

/// setting(key): a value of the tenant's [config] (its tenant.toml), "unset" when there is none.
fn setting(ctx: Ctx) callconv(.c) void {
    var key: [*c]const u8 = null;
    if (!c.celeriac_arg_string(ctx, 0, &key)) return;
    const value = c.celeriac_config(key);
    defer std.c.free(value);
    c.celeriac_return_string(ctx, if (value != null) value else "unset");
}

/// Raises `exc_type(message)` with a traceback line naming this Zig source location.
fn raise(ctx: Ctx, exc_type: [*:0]const u8, message: [*:0]const u8, src: std.builtin.SourceLocation) void {
    c.celeriac_raise_message(ctx, exc_type, message, src.file.ptr, @intCast(src.line), src.fn_name.ptr);
}

/// One entry of the task table: name, function, positional argument count (-1: any).
fn entry(name: [*:0]const u8, run: c.celeriac_fn, nargs: c_int) c.celeriac_task {
    var t = std.mem.zeroes(c.celeriac_task);
    t.name = name;
    t.run = run;
    t.nargs = nargs;
    return t;
}

const tasks = [_]c.celeriac_task{
    entry("add", add, 2),
    entry("mul", mul, 2),
    entry("xsum", xsum, 1),
    entry("fail", fail, -1),
    entry("crash", crash, -1),
    entry("setting", setting, 1),
};

/// The task table the SDK serves (`task.tasks` / `task.invoke`).
export fn celeriac_task_table(count: *usize) [*]const c.celeriac_task {
    count.* = tasks.len;
    return &tasks;
}

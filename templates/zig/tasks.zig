//! A Celeriac task project in Zig. Build with `celeriac build . -o out/tasks.wasm`
//! (needs Zig: `pip install ziglang`), then serve it: `celeriac worker -A out`.
//! The module `celeriac` (the C SDK celeriac.h, translated) is provided by `celeriac build`.
const std = @import("std");
const c = @import("celeriac");

/// add(x, y) -> x + y, for ints (Celery's First Steps task).
fn add(ctx: ?*c.celeriac_ctx) callconv(.c) void {
    var x: i64 = 0;
    var y: i64 = 0;
    if (!c.celeriac_arg_int(ctx, 0, &x) or !c.celeriac_arg_int(ctx, 1, &y)) return; // TypeError raised
    c.celeriac_return_int(ctx, x +% y);
}

/// One entry of the task table: name, function, positional argument count (-1: any).
/// Options (rate_limit, time_limit, ...) are further fields of c.celeriac_task.
fn entry(name: [*:0]const u8, run: c.celeriac_fn, nargs: c_int) c.celeriac_task {
    var t = std.mem.zeroes(c.celeriac_task);
    t.name = name;
    t.run = run;
    t.nargs = nargs;
    return t;
}

const tasks = [_]c.celeriac_task{
    entry("add", add, 2),
};

/// The tasks this component serves.
export fn celeriac_task_table(count: *usize) [*]const c.celeriac_task {
    count.* = tasks.len;
    return &tasks;
}

//! The tasks of {{name}}: built as `{{name}}.wasm`, a Celeriac worker serves
//! them as `{{name}}.add`, ... (see the celeriac-sdk docs for arguments,
//! errors, logging, `update_state` and `request`).

use celeriac_sdk::{TaskError, task};

/// `{{name}}.add(x, y)`: the sum of two integers.
#[task]
fn add(x: i64, y: i64) -> Result<i64, TaskError> {
    x.checked_add(y).ok_or_else(|| TaskError::new("OverflowError", "int too large"))
}

celeriac_sdk::export_tasks!(add);

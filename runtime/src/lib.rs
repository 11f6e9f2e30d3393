//! Celeriac: a Celery-compatible task worker that runs each task as a
//! sandboxed WebAssembly component.
//!
//! Modules are named after Celery's own concepts so a Celery user finds things
//! where they expect them: [`protocol`] is Celery's message format,
//! [`connection`] holds URLs and server connections, [`broker`] and
//! [`backend`] speak to Redis and SQLite the way kombu and Celery do,
//! [`sandbox`] runs task components under limits, [`worker`] ties them
//! together, [`config`] reads Celery's setting names, [`remote`] is the
//! client side of remote control (`celeriac inspect/control/status`), and
//! [`cli`] is the `celeriac` command.

pub mod backend;
pub mod batch;
pub mod broker;
pub mod cli;
pub mod config;
pub mod connection;
pub mod hints;
pub mod logging;
pub mod protocol;
pub mod remote;
pub mod sandbox;
pub mod toolchain;
pub mod worker;

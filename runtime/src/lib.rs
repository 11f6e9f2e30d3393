//! Celeriac: a Celery-compatible task worker that runs each task as a
//! sandboxed WebAssembly component.
//!
//! Modules are named after Celery's own concepts so a Celery user finds things
//! where they expect them: [`protocol`] (the `celeriac-protocol` crate) is Celery's message format,
//! [`connection`] holds URLs and server connections, [`broker`] and
//! [`backend`] speak to Redis and SQLite the way kombu and Celery do,
//! [`sandbox`] runs task components under limits, [`worker`] ties them
//! together, [`config`] reads Celery's setting names, [`remote`] is the
//! client side of remote control (`celeriac inspect/control/status`),
//! [`toolchain`] scaffolds and builds task projects in each guest language
//! (`celeriac new/build`), and [`cli`] is the `celeriac` command.

pub mod backend;
pub mod batch;
pub mod broker;
pub mod cli;
pub mod config;
pub mod connection;
pub mod hints;
pub mod logging;
pub use celeriac_protocol as protocol;
pub mod remote;
pub mod sandbox;
pub mod security;
pub mod toolchain;
pub mod worker;

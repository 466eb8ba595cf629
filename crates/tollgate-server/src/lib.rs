#![recursion_limit = "512"]
//! Tollgate's HTTP service: configuration, start-up, authentication, and
//! the routes grouped by audience. The binary only wires this together;
//! tests start it in-process through [`app::start`].

pub mod app;
pub mod audit;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod handles;
pub mod hooks;
pub mod logging;
pub mod metering;
pub mod openapi;
pub mod routes;
pub mod serve;
pub mod state;
pub mod vault;
pub mod web;

pub use app::{Server, start};
pub use config::{Config, LogFormat};

/// jemalloc, for every binary that runs the server (`tollgate`, the
/// benches): a proxied call allocates some hundred times, and glibc's
/// `malloc` and `free` took a sixth of its instructions; with jemalloc a
/// call takes some 13 % fewer. The memory targets still hold (the README's
/// Performance section has the figures).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

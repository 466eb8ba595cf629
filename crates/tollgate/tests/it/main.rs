//! Integration tests: the real server, on a fresh SQLite file or a fresh
//! Postgres database each, driven over HTTP; some start the real binary.

mod admin;
mod auth;
mod cli;
mod common;
mod keys;
mod metering;
mod ops;
mod process;
mod web;

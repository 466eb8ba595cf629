//! Integration tests: the real server, on a fresh SQLite file or a fresh
//! Postgres database each, driven over HTTP; some start the real binary.
//! `mock` checks the provider stand-in itself; `sdk` drives it (and later
//! the gateway) with the official client SDKs.

mod admin;
mod audit;
mod auth;
mod cli;
mod cluster;
mod common;
mod gateway;
mod hooks;
mod keys;
mod metering;
mod mock;
mod ops;
mod process;
mod sdk;
mod vault;
mod web;

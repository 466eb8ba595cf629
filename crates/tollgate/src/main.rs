//! The `tollgate` binary: parses the command line and hands over to the
//! libraries. Nothing else lives here.

mod cli;
mod client;
mod demo;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    cli::Cli::parse().run().await
}

//! `pulmo config`: print the commented default configuration, or check a file.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use pulmo::config::DEFAULT_TOML;

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print the commented default configuration (redirect it to pulmo.toml to start one)
    #[arg(long)]
    print_default: bool,
}

pub fn run(args: ConfigArgs, loaded: Option<&Path>) -> anyhow::Result<ExitCode> {
    if args.print_default {
        print!("{DEFAULT_TOML}");
        return Ok(ExitCode::SUCCESS);
    }
    // The config was loaded and validated before we got here.
    match loaded {
        Some(p) => println!("{}: valid", p.display()),
        None => println!("no --config given: the defaults apply (see --print-default)"),
    }
    Ok(ExitCode::SUCCESS)
}

//! Subcommands, one file each. Errors end here as `anyhow` with context for the user.

mod analyze;
mod config_cmd;
mod demo;
mod inspect;
mod models;
mod phantom;
mod retry;
mod send;
mod serve;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use pulmo::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "pulmo",
    version,
    about = "DICOM node for chest CT: lung lobes, opacities and a COVID-19 classifier, answered \
             with DICOM SEG and a TID 1500 SR",
    long_about = "pulmo receives chest CT studies over DICOM, segments the five lung lobes and \
                  the opacities, measures the percentage of each lobe that is opacified, and \
                  sends back DICOM Segmentation objects and a TID 1500 Structured Report.\n\n\
                  The shipped models are trained on synthetic data for integration and testing. \
                  Not for clinical use."
)]
pub struct Cli {
    /// Configuration file (TOML). Without it, every setting has its default.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the DICOM node: receive studies, analyse them, deliver results
    Serve,
    /// Analyse a folder of DICOM files and write findings and result objects (no network)
    Analyze(analyze::AnalyzeArgs),
    /// Run the whole path on a synthetic study over loopback and print a summary table
    Demo(demo::DemoArgs),
    /// Write a synthetic chest CT study with ground truth
    Phantom(phantom::PhantomArgs),
    /// Read a folder of DICOM files: list studies and series, pick the series to measure, say why
    Inspect(inspect::InspectArgs),
    /// Send DICOM files (and folders, recursively) to a node with C-STORE
    Send {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, value_name = "AE@HOST:PORT")]
        to: String,
        /// Calling AE title (default: this node's AE title)
        #[arg(long)]
        calling_ae: Option<String>,
    },
    /// Verify a DICOM node with C-ECHO
    Echo {
        #[arg(value_name = "AE@HOST:PORT")]
        target: String,
        /// Calling AE title (default: this node's AE title)
        #[arg(long)]
        calling_ae: Option<String>,
    },
    /// Show studies, jobs and deliveries
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Send parked (failed) deliveries again: one by id, or all of them
    Retry {
        /// Delivery id, as `pulmo status` lists it
        id: Option<i64>,
        #[arg(long)]
        all_failed: bool,
    },
    /// List and check the installed models
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Configuration: print the commented default, or check a file
    Config(config_cmd::ConfigArgs),
    /// The node's analysis of one job, in a process of its own (started by `serve`)
    #[command(hide = true)]
    AnalyzeJob { input: PathBuf, out: PathBuf },
}

/// The per-lobe table that `phantom` (truth) and `analyze` (findings) print.
fn print_measurements(m: &pulmo::quant::Measurements) {
    println!("lobe   volume ml   PLO %   GGO %   cons %   CTSS");
    for (k, l) in &m.lobes {
        println!(
            "{k:<5} {:>10.1} {:>7.2} {:>7.2} {:>8.2} {:>6}",
            l.volume_ml, l.plo_percent, l.ggo_percent, l.consolidation_percent, l.ctss
        );
    }
    let w = &m.whole_lung;
    println!(
        "lung  {:>10.1} {:>7.2}                   {:>6}",
        w.volume_ml, w.plo_percent, w.ctss_total
    );
}

pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Config::load(p).with_context(|| format!("loading {}", p.display())),
        None => Ok(Config::default()),
    }
}

pub fn run(args: Cli) -> anyhow::Result<ExitCode> {
    let config = load_config(args.config.as_ref())?;
    match args.command {
        Command::Phantom(a) => phantom::run(a),
        Command::Inspect(a) => inspect::run(a, &config),
        Command::Config(a) => config_cmd::run(a, args.config.as_deref()),
        Command::Serve => serve::run(&config),
        Command::Send {
            paths,
            to,
            calling_ae,
        } => send::run(&paths, &to, calling_ae, &config),
        Command::Echo { target, calling_ae } => {
            let calling = calling_ae.unwrap_or_else(|| config.node.ae_title.clone());
            let status = pulmo::net::scu::echo(
                &target,
                &calling,
                std::time::Duration::from_secs(config.node.dimse_timeout_s),
            )?;
            if status == 0 {
                println!("C-ECHO {target}: success");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("C-ECHO {target}: status 0x{status:04X}");
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Status { json } => status::run(json, &config),
        Command::Retry { id, all_failed } => retry::run(id, all_failed, &config),
        Command::Analyze(a) => analyze::run(a, &config),
        Command::Models(c) => models::run(c, &config),
        Command::Demo(a) => demo::run(a, &config),
        Command::AnalyzeJob { input, out } => {
            pulmo::pipeline::worker::run_child(&config, &input, &out)
                .map_err(anyhow::Error::msg)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

//! `pulmo models list|check`: the installed models, their checksums, whether they load.

use std::process::ExitCode;

use clap::Subcommand;

use pulmo::config::Config;
use pulmo::infer::model::{self, Manifest, Model};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the manifests in the models folder and check each file's sha256
    List,
    /// Load every model with ONNX Runtime and report the execution provider
    Check,
}

pub fn run(cmd: ModelsCommand, config: &Config) -> anyhow::Result<ExitCode> {
    let dir = &config.inference.models_dir;
    let manifests = model::manifests_in(dir)?;
    if manifests.is_empty() {
        println!("no model manifests in {}", dir.display());
        return Ok(ExitCode::FAILURE);
    }
    let mut ok = true;
    for path in manifests {
        match cmd {
            ModelsCommand::List => match Manifest::load(&path) {
                Ok(m) => {
                    let file = path.parent().unwrap_or(dir).join(&m.file);
                    let sum = std::fs::read(&file).map(|b| model::sha256_hex(&b));
                    let state = match sum {
                        Ok(s) if s.eq_ignore_ascii_case(&m.sha256) => "sha256 ok".to_string(),
                        Ok(s) => {
                            ok = false;
                            format!("sha256 MISMATCH ({s})")
                        }
                        Err(e) => {
                            ok = false;
                            format!("cannot read {}: {e}", file.display())
                        }
                    };
                    println!(
                        "{:<10} {} {} ({:?}, {}) {state}",
                        format!("{:?}", m.role).to_lowercase(),
                        m.name,
                        m.version,
                        m.input.layout,
                        m.file.display()
                    );
                }
                Err(e) => {
                    ok = false;
                    println!("{}: {e}", path.display());
                }
            },
            ModelsCommand::Check => match Model::load(&path, &config.inference) {
                Ok(m) => println!(
                    "{} {}: loads, runs on {}",
                    m.manifest.name, m.manifest.version, m.provider
                ),
                Err(e) => {
                    ok = false;
                    println!("{}: {e}", path.display());
                }
            },
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

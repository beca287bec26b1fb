//! Loading ONNX Runtime at run time (ort `load-dynamic`) and creating sessions on the first
//! execution provider that works.
//!
//! The library is found from the config, then `ORT_DYLIB_PATH`, then an installed `onnxruntime`
//! (or `onnxruntime-gpu`) Python package. ort panics when it cannot load a library, so the path is
//! checked here first and a missing library is an error that says how to install it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use super::InferError;
use crate::config::InferenceConfig;

/// How to get a library, for every "not found" message.
pub const INSTALL_HINT: &str = "install ONNX Runtime: `make build` puts the CPU build in build/venv \
     (found automatically when pulmo runs from the repository), or `pip install onnxruntime==1.31.1` \
     (`onnxruntime-gpu` for CUDA) in the Python that pulmo finds (PULMO_PYTHON or python3), or point \
     [inference] onnxruntime_library in pulmo.toml or ORT_DYLIB_PATH at libonnxruntime.so";

/// The loaded runtime. Holds the ort environment, which ort itself only references weakly.
pub struct Runtime {
    env: ort::environment::Environment,
    pub library: PathBuf,
    pub version: String,
}

static RUNTIME: OnceLock<Mutex<Option<Arc<Runtime>>>> = OnceLock::new();

fn python_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("PULMO_PYTHON") {
        out.push(PathBuf::from(p));
    }
    // The repository's venv, seen from the working directory or from target/release/pulmo.
    out.push(PathBuf::from("build/venv/bin/python"));
    if let Ok(exe) = std::env::current_exe()
        && let Some(repo) = exe.parent().and_then(Path::parent).and_then(Path::parent)
    {
        out.push(repo.join("build/venv/bin/python"));
    }
    out.push(PathBuf::from("python3"));
    out
}

/// The shared library inside an installed onnxruntime Python package, if any.
fn from_python(python: &Path) -> Option<PathBuf> {
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import os, onnxruntime; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("capi");
    let mut libs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    // Prefer the versioned file (libonnxruntime.so.1.31.1) over a symlink.
    libs.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    libs.into_iter().next()
}

/// Where the library is, and where we looked.
pub fn find_library(cfg: &InferenceConfig) -> Result<PathBuf, InferError> {
    let mut looked = Vec::new();
    if let Some(p) = &cfg.onnxruntime_library {
        // An explicit setting is not second-guessed with fallbacks.
        if p.is_file() {
            return Ok(p.clone());
        }
        return Err(InferError::RuntimeNotFound {
            looked: format!(
                "inference.onnxruntime_library = {} (no such file)",
                p.display()
            ),
            hint: INSTALL_HINT,
        });
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        looked.push(format!("ORT_DYLIB_PATH={} (no such file)", p.display()));
    } else {
        looked.push("ORT_DYLIB_PATH (unset)".into());
    }
    for py in python_candidates() {
        if let Some(lib) = from_python(&py) {
            return Ok(lib);
        }
        looked.push(format!("onnxruntime package of {}", py.display()));
    }
    Err(InferError::RuntimeNotFound {
        looked: looked.join(", "),
        hint: INSTALL_HINT,
    })
}

/// Load ONNX Runtime once per process.
pub fn runtime(cfg: &InferenceConfig) -> Result<Arc<Runtime>, InferError> {
    let cell = RUNTIME.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().map_err(|_| InferError::Runtime {
        message: "runtime lock poisoned".into(),
    })?;
    if let Some(rt) = guard.as_ref() {
        return Ok(rt.clone());
    }
    let library = find_library(cfg)?;
    let builder = ort::init_from(&library).map_err(|e| InferError::Runtime {
        message: format!(
            "cannot load ONNX Runtime from {}: {e}; {INSTALL_HINT}",
            library.display()
        ),
    })?;
    let env = builder
        .with_name("pulmo")
        .build()
        .map_err(|e| InferError::Runtime {
            message: format!("cannot start ONNX Runtime: {e}"),
        })?;
    let version = library
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libonnxruntime.so."))
        .unwrap_or("unknown")
        .to_string();
    tracing::info!(library = %library.display(), %version, "ONNX Runtime loaded");
    let rt = Arc::new(Runtime {
        env,
        library,
        version,
    });
    *guard = Some(rt.clone());
    Ok(rt)
}

/// Create a session for `model` on the first provider of `providers` that accepts it. Returns the
/// session and the provider really used.
pub fn session(
    rt: &Runtime,
    model: &[u8],
    providers: &[String],
    threads: usize,
) -> Result<(Session, String), InferError> {
    let mut last = String::from("no execution provider configured");
    for name in providers {
        let builder = Session::builder(&rt.env)
            .and_then(|b| {
                b.with_optimization_level(GraphOptimizationLevel::All)
                    .map_err(Into::into)
            })
            .and_then(|b| b.with_intra_threads(threads).map_err(Into::into))
            .map_err(|e| InferError::Runtime {
                message: format!("cannot configure a session: {e}"),
            })?;
        let with_ep = match name.as_str() {
            "cpu" => Ok(builder),
            "cuda" => builder
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| e.to_string()),
            "tensorrt" => builder
                .with_execution_providers([ort::ep::TensorRT::default().build().error_on_failure()])
                .map_err(|e| e.to_string()),
            other => Err(format!("unknown execution provider {other}")),
        };
        let mut builder = match with_ep {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(provider = %name, error = %e, "execution provider unavailable; trying the next");
                last = format!("{name}: {e}");
                continue;
            }
        };
        match builder.commit_from_memory(model) {
            Ok(s) => return Ok((s, name.clone())),
            Err(e) => {
                tracing::warn!(provider = %name, error = %e, "session creation failed; trying the next provider");
                last = format!("{name}: {e}");
            }
        }
    }
    Err(InferError::Runtime {
        message: format!("no execution provider could run the model ({last})"),
    })
}

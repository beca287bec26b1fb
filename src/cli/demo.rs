//! `pulmo demo`: the whole product on one machine, over loopback. A synthetic study is generated;
//! a `pulmo serve` node is started (a child process, the real node); pulmo's own SCU sends the
//! study to it; a receiver standing in for the PACS (pulmo's SCP, accepting the result classes,
//! in this process) gets the results; they are checked and a table of per-lobe findings next to
//! the phantom's truth is printed.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use dicom_dictionary_std::uids;

use pulmo::config::{Config, Destination, NodeConfig};
use pulmo::iod::transfer_syntax::Syntax;
use pulmo::metrics::Metrics;
use pulmo::net::{scp, scu};
use pulmo::phantom::study::{self, StudyOptions};
use pulmo::phantom::{self, Params, Pattern, Severity, Size};
use pulmo::quant::Lobe;
use pulmo::store::{JobState, Store};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Working folder: study/, node/ (the node's data), pacs/ (what the receiver got)
    #[arg(long, default_value = "pulmo-demo")]
    out: PathBuf,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = Size::Full)]
    size: Size,
    #[arg(long, value_enum, default_value_t = Severity::Severe)]
    severity: Severity,
    /// Give up waiting for the results after this many seconds
    #[arg(long, default_value_t = 900)]
    timeout_s: u64,
}

/// The result classes the stand-in PACS accepts (everything the node sends).
const RESULT_CLASSES: [&str; 4] = [
    uids::SEGMENTATION_STORAGE,
    uids::ENHANCED_SR_STORAGE,
    uids::COMPREHENSIVE3_DSR_STORAGE,
    uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
];

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// The stand-in PACS: pulmo's SCP on its own store, on a background thread.
struct Receiver {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    store: Arc<Store>,
    port: u16,
}

impl Receiver {
    fn start(dir: &Path) -> anyhow::Result<Receiver> {
        let store = Arc::new(Store::open(dir).context("opening the receiver's store")?);
        let port = free_port()?;
        let node = NodeConfig {
            ae_title: "DEMO-PACS".into(),
            port,
            extra_sop_classes: RESULT_CLASSES.iter().map(|s| s.to_string()).collect(),
            ..NodeConfig::default()
        };
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the receiver's runtime")?;
        let s = store.clone();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let shutdown = async move {
                    let _ = stopped.wait_for(|v| *v).await;
                };
                if let Err(e) = scp::serve(node, s, Arc::new(Metrics::new()), shutdown).await {
                    tracing::error!(error = %e, "the demo receiver stopped");
                }
            });
        });
        Ok(Receiver {
            stop,
            thread: Some(thread),
            store,
            port,
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The node under demonstration: `pulmo serve` as a child process; stopped with SIGTERM.
struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // SIGTERM: the node's clean stop (requeue, clean-shutdown mark).
        let pid = self.0.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node_config(base: &Config, dir: &Path, receiver_port: u16) -> anyhow::Result<(Config, PathBuf)> {
    let mut c = base.clone();
    c.node.ae_title = "PULMO".into();
    c.node.bind = "127.0.0.1".into();
    c.node.port = free_port()?;
    c.node.allowed_calling_aes = Vec::new();
    c.storage.data_dir = dir.join("node");
    c.storage.stable_after_s = 2;
    c.http.bind = "127.0.0.1".into();
    c.http.port = free_port()?;
    c.destinations = vec![Destination {
        name: "demo-pacs".into(),
        ae_title: "DEMO-PACS".into(),
        host: "127.0.0.1".into(),
        port: receiver_port,
    }];
    // Relative paths in the user's config are relative to where pulmo was started: keep them so.
    let cwd = std::env::current_dir().context("current folder")?;
    if c.inference.models_dir.is_relative() {
        c.inference.models_dir = cwd.join(&c.inference.models_dir);
    }
    if let Some(t) = c.output.sr_template.as_mut().filter(|t| t.is_relative()) {
        *t = cwd.join(&*t);
    }
    let path = dir.join("pulmo.toml");
    std::fs::write(
        &path,
        toml::to_string(&c).context("writing the node's config")?,
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok((c, path))
}

pub fn run(a: DemoArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    if a.out.exists() {
        std::fs::remove_dir_all(&a.out).with_context(|| format!("clearing {}", a.out.display()))?;
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let out = a.out.canonicalize().context("the demo folder")?;

    // 1. A synthetic chest CT with its truth.
    let mut params = Params::new(a.seed, a.size);
    params.pattern = Pattern::Covid;
    params.severity = a.severity;
    let p = phantom::generate(&params);
    let written = study::write(
        &p,
        &out.join("study"),
        StudyOptions {
            syntax: Syntax::Explicit,
            extra_series: true,
            shuffle: false,
        },
    )
    .context("writing the phantom study")?;
    let files = pulmo::pipeline::scan::files_under(&out.join("study/dicom"))?;
    println!(
        "1. phantom: seed {}, COVID-19 pattern, {:?} severity, {} files (CT, scout, soft-tissue series)",
        a.seed,
        a.severity,
        files.len()
    );

    // 2. The receiver standing in for the PACS, and the node.
    let receiver = Receiver::start(&out.join("pacs"))?;
    let (node_cfg, node_cfg_path) = node_config(config, &out, receiver.port)?;
    let exe = std::env::current_exe().context("finding the pulmo executable")?;
    let log = std::fs::File::create(out.join("node.log")).context("creating node.log")?;
    let child = std::process::Command::new(exe)
        .arg("--config")
        .arg(&node_cfg_path)
        .arg("serve")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting pulmo serve")?;
    let _node = NodeProcess(child);
    let target = format!("PULMO@127.0.0.1:{}", node_cfg.node.port);
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", node_cfg.node.port)).is_err() {
        if t.elapsed() > Duration::from_secs(30) {
            bail!(
                "the node did not start; see {}",
                out.join("node.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "2. node: pulmo serve on {target} (log: {}), results to the receiver DEMO-PACS@127.0.0.1:{}",
        out.join("node.log").display(),
        receiver.port
    );

    // 3. Send the study with pulmo's own SCU.
    let outcomes = scu::store(&target, "DEMO-MODALITY", &files, Duration::from_secs(60))
        .context("sending the study")?;
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            scu::StoreOutcome::Failed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} files were not stored: {}",
            failed.len(),
            files.len(),
            failed[0]
        );
    }
    println!(
        "3. sent: {} files stored by the node (C-STORE)",
        files.len()
    );

    // 4. Wait for the job and its deliveries.
    let node_store = Store::open_existing(&node_cfg.storage.data_dir)?;
    let deadline = Instant::now() + Duration::from_secs(a.timeout_s);
    let mut last = String::new();
    let job = loop {
        if Instant::now() > deadline {
            bail!(
                "no result after {} s; see {}",
                a.timeout_s,
                out.join("node.log").display()
            );
        }
        if let Some(j) = node_store.jobs(1)?.into_iter().next() {
            if j.state.as_str() != last {
                last = j.state.as_str().to_string();
                println!(
                    "   job {}: {last} ({:.0} s)",
                    j.id,
                    t0.elapsed().as_secs_f64()
                );
            }
            match j.state {
                JobState::Done => break j,
                JobState::Failed | JobState::Skipped => bail!(
                    "the study was {}: {}",
                    j.state.as_str(),
                    j.reason.unwrap_or_default()
                ),
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let findings_path = node_store.results_dir(job.id).join("findings.json");
    let findings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&findings_path)
            .with_context(|| format!("reading {}", findings_path.display()))?,
    )?;

    // 5. What the receiver holds: every file parses; two SEGs, one SR, the overlay series.
    let received = pulmo::pipeline::scan::files_under(&receiver.store.root().join("spool"))?;
    let mut by_class = std::collections::BTreeMap::<String, usize>::new();
    for f in &received {
        let obj = dicom_object::open_file(f)
            .with_context(|| format!("the receiver's file {} does not parse", f.display()))?;
        let class = obj
            .meta()
            .media_storage_sop_class_uid()
            .trim_end_matches('\0');
        *by_class.entry(class.to_string()).or_default() += 1;
    }
    let count = |uid: &str| by_class.get(uid).copied().unwrap_or(0);
    let sr = count(uids::ENHANCED_SR_STORAGE) + count(uids::COMPREHENSIVE3_DSR_STORAGE);
    let seg = count(uids::SEGMENTATION_STORAGE);
    let sc = count(uids::SECONDARY_CAPTURE_IMAGE_STORAGE);
    if seg != 2 || sr != 1 || (config.output.overlay_series && sc < 2) {
        bail!(
            "the receiver holds {seg} SEG, {sr} SR, {sc} overlay images; expected 2, 1 and a series"
        );
    }
    println!(
        "4. received: 2 SEG, 1 SR, {sc} overlay images in {} ({:.0} s after the first file was sent)",
        receiver.store.root().join("spool").display(),
        t.elapsed().as_secs_f64()
    );

    // 6. The table.
    let truth = &written.truth;
    println!();
    println!("lobe    volume ml (truth)    PLO % (truth)     CTSS (truth)");
    for lobe in Lobe::ALL {
        let k = lobe.key();
        let f = &findings["lobes"][k];
        let Some(t) = truth.measurements.lobes.get(k) else {
            continue;
        };
        println!(
            "{k:<5} {:>9.1} ({:>7.1}) {:>8.2} ({:>6.2}) {:>8} ({:>2})",
            f["volume_ml"].as_f64().unwrap_or(f64::NAN),
            t.volume_ml,
            f["plo_percent"].as_f64().unwrap_or(f64::NAN),
            t.plo_percent,
            f["ctss"].as_u64().unwrap_or(0),
            t.ctss
        );
    }
    let w = &findings["whole_lung"];
    println!(
        "lung  {:>9.1} ({:>7.1}) {:>8.2} ({:>6.2}) {:>8} ({:>2})",
        w["volume_ml"].as_f64().unwrap_or(f64::NAN),
        truth.measurements.whole_lung.volume_ml,
        w["plo_percent"].as_f64().unwrap_or(f64::NAN),
        truth.measurements.whole_lung.plo_percent,
        w["ctss_total"].as_u64().unwrap_or(0),
        truth.measurements.whole_lung.ctss_total
    );
    println!(
        "COVID-19 probability {:.3} (the phantom has the COVID-19 pattern)",
        findings["covid_probability"].as_f64().unwrap_or(f64::NAN)
    );
    let models: Vec<String> = findings["models"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| {
                    format!(
                        "{} {}",
                        m["name"].as_str().unwrap_or("?"),
                        m["version"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    println!("models: {}", models.join(", "));
    println!();
    println!(
        "study (with truth/ and preview/): {}",
        out.join("study").display()
    );
    println!("findings: {}", findings_path.display());
    println!(
        "results as the PACS got them: {}",
        receiver.store.root().join("spool").display()
    );
    println!(
        "all in {:.0} s. Synthetic data, and models from {} that are not for clinical use.",
        t0.elapsed().as_secs_f64(),
        node_cfg.inference.models_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

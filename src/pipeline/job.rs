//! Running the node's study jobs: take a stable study from the store, turn it into result
//! objects with a `StudyProcessor`, and hand them to the outbox, one transaction per transition.
//!
//! The processor is an interface so that the stage between "stable study" and "result objects"
//! can be swapped: `Analysis` is the real one (select, infer, measure, SEG); tests may plug in a
//! simpler producer.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use dicom_dictionary_std::tags;

use super::analyze::{self, AnalyzeError, LogProgress};
use super::{ReadStudyError, select};
use crate::config::Config;
use crate::infer::ModelSet;
use crate::store::outbox::ResultObject;
use crate::store::{JobState, Store, StoreError, StudyJobInput};

/// What a processor made of a study.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Processed {
    /// Result objects written under the job's folder, and how long each stage took.
    Produced {
        files: Vec<PathBuf>,
        timings: Vec<(String, f64)>,
        /// Set when a quality check failed: why the numbers are not reliable, kept as the job's
        /// reason.
        #[serde(default)]
        warning: Option<String>,
    },
    /// Nothing to measure (no suitable series, say): the reason in words.
    Skipped(String),
    /// Could not be analysed: the reason in words.
    Failed(String),
}

/// The stage that turns a stable study into result objects.
pub trait StudyProcessor: Send + Sync {
    /// Process the study made of `job.files`, writing result objects under `out` (an empty folder).
    fn process(&self, job: &StudyJobInput, out: &Path) -> Processed;
}

/// Where a job's stage timings go (the node's metrics).
pub trait StageSink: Send + Sync {
    fn stage(&self, stage: &str, seconds: f64);
}

impl StageSink for crate::metrics::Metrics {
    fn stage(&self, stage: &str, seconds: f64) {
        crate::metrics::Metrics::stage(self, stage, seconds);
    }
}

/// Run the oldest stable job, if any. Returns whether one was run.
pub fn run_one(
    store: &Store,
    processor: &dyn StudyProcessor,
    destinations: &[String],
    stable_after_ms: i64,
    sink: &dyn StageSink,
) -> Result<bool, StoreError> {
    let Some(job) = store.claim_job(stable_after_ms)? else {
        return Ok(false);
    };
    let span = tracing::info_span!("job", id = job.job_id, study = %job.study_uid);
    let _enter = span.enter();
    tracing::info!(
        instances = job.files.len(),
        attempt = job.attempt,
        "job started"
    );
    let out = store.results_dir(job.job_id);
    // Left over from an attempt that was interrupted: its objects are made again.
    std::fs::remove_dir_all(&out).ok();
    if let Err(e) = std::fs::create_dir_all(&out) {
        let reason = format!("cannot create {}: {e}", out.display());
        store.job_ended(job.job_id, JobState::Failed, &reason)?;
        return Ok(true);
    }
    let t = Instant::now();
    let processed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        processor.process(&job, &out)
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Processed::Failed(format!("the analysis stopped on an internal error: {what}"))
    });
    let total = t.elapsed().as_secs_f64();
    match processed {
        Processed::Produced {
            files,
            timings,
            warning,
        } => {
            for (stage, s) in &timings {
                sink.stage(stage, *s);
            }
            let stages: Vec<String> = timings
                .iter()
                .map(|(k, v)| format!("{k}={v:.2}s"))
                .collect();
            tracing::info!(stages = %stages.join(" "), "stage timings");
            sink.stage("job", total);
            let results = match durable_results(&files, &out) {
                Ok(r) => r,
                Err(reason) => {
                    tracing::warn!(%reason, "job failed");
                    store.job_ended(job.job_id, JobState::Failed, &reason)?;
                    return Ok(true);
                }
            };
            let state =
                store.job_produced(job.job_id, &results, destinations, warning.as_deref())?;
            tracing::info!(
                objects = results.len(),
                seconds = total,
                state = state.as_str(),
                "job produced its results"
            );
        }
        Processed::Skipped(reason) => {
            tracing::info!(%reason, "study skipped");
            store.job_ended(job.job_id, JobState::Skipped, &reason)?;
        }
        Processed::Failed(reason) => {
            tracing::warn!(%reason, "job failed");
            store.job_ended(job.job_id, JobState::Failed, &reason)?;
        }
    }
    Ok(true)
}

/// fsync every result file and their folder (they are acknowledged to the outbox next), and read
/// what the outbox needs from each.
fn durable_results(files: &[PathBuf], out: &Path) -> Result<Vec<ResultObject>, String> {
    let mut results = Vec::with_capacity(files.len());
    for f in files {
        std::fs::File::open(f)
            .and_then(|h| h.sync_all())
            .map_err(|e| format!("cannot sync {}: {e}", f.display()))?;
        let obj = dicom_object::OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(f)
            .map_err(|e| format!("result {} cannot be read back: {e}", f.display()))?;
        let meta = obj.meta();
        results.push(ResultObject {
            path: f.clone(),
            sop_class_uid: meta
                .media_storage_sop_class_uid
                .trim_end_matches('\0')
                .to_string(),
            sop_instance_uid: meta
                .media_storage_sop_instance_uid
                .trim_end_matches('\0')
                .to_string(),
        });
    }
    // Every folder that holds a result (the overlay series has its own), then the job's folder.
    let mut dirs: std::collections::BTreeSet<&Path> =
        files.iter().filter_map(|f| f.parent()).collect();
    dirs.insert(out);
    for d in dirs {
        std::fs::File::open(d)
            .and_then(|h| h.sync_all())
            .map_err(|e| format!("cannot sync {}: {e}", d.display()))?;
    }
    Ok(results)
}

/// The real processor: select the series, segment, classify, measure, write the SEGs, the
/// TID 1500 SR and, when configured, the overlay series (and findings.json beside them, which is kept, not delivered). The models are loaded at the first
/// job and kept; a model set that cannot be loaded fails the job with the reason, and is tried
/// again at the next.
pub struct Analysis {
    config: Config,
    template: crate::iod::sr::template::Template,
    models: Mutex<Option<ModelSet>>,
}

impl Analysis {
    /// Fails when the SR template is not valid: the node refuses to start with the line and reason.
    pub fn new(config: Config) -> Result<Analysis, crate::iod::sr::template::TemplateError> {
        Ok(Analysis {
            template: analyze::load_template(&config.output)?,
            config,
            models: Mutex::new(None),
        })
    }
}

impl StudyProcessor for Analysis {
    fn process(&self, job: &StudyJobInput, out: &Path) -> Processed {
        let Ok(mut models) = self.models.lock() else {
            return Processed::Failed("model lock poisoned".into());
        };
        if models.is_none() {
            match ModelSet::load(&self.config.inference) {
                Ok(m) => *models = Some(m),
                Err(e) => return Processed::Failed(format!("the models could not be loaded: {e}")),
            }
        }
        let Some(models) = models.as_ref() else {
            return Processed::Failed("no models".into());
        };
        let origin = format!("study {}", job.study_uid);
        let (analysis, masks) = match analyze::analyze(
            job.files.clone(),
            &origin,
            &self.config,
            models,
            &mut LogProgress,
        ) {
            Ok(r) => r,
            Err(e) => return classify_error(e),
        };
        let findings = out.join("findings.json");
        let written = serde_json::to_string_pretty(&analysis)
            .map_err(|e| e.to_string())
            .and_then(|j| std::fs::write(&findings, j + "\n").map_err(|e| e.to_string()));
        if let Err(e) = written {
            return Processed::Failed(format!("cannot write findings.json: {e}"));
        }
        let t = Instant::now();
        let mut files = match analyze::write_segs(out, &analysis, &masks) {
            Ok(f) => f,
            Err(e) => return Processed::Failed(format!("cannot write the SEG objects: {e}")),
        };
        let kind = crate::iod::sr::SrKind::from_config(&self.config.output.sr_kind);
        match analyze::write_report(out, &analysis, &masks, &self.template, kind) {
            Ok(p) => files.push(p),
            Err(e) => return Processed::Failed(format!("cannot write the SR: {e}")),
        }
        if self.config.output.overlay_series {
            match analyze::write_overlay(out, &analysis, &masks) {
                Ok(p) => files.extend(p),
                Err(e) => {
                    return Processed::Failed(format!("cannot write the overlay series: {e}"));
                }
            }
        }
        let mut timings: Vec<(String, f64)> = analysis
            .timings_s
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        timings.push(("seg".into(), t.elapsed().as_secs_f64()));
        let f = &analysis.findings;
        Processed::Produced {
            files,
            timings,
            warning: (!f.qc_passed).then(|| f.reliability.clone()),
        }
    }
}

/// A study that cannot be measured honestly is skipped; anything else is a failure.
fn classify_error(e: AnalyzeError) -> Processed {
    match e {
        AnalyzeError::Read(ReadStudyError::Select(
            s @ (select::SelectError::NoImages
            | select::SelectError::Unreadable { .. }
            | select::SelectError::NoSuitableSeries { .. }),
        )) => Processed::Skipped(s.to_string()),
        AnalyzeError::Read(r @ ReadStudyError::Assemble(_)) => {
            Processed::Skipped(format!("the series cannot be measured: {r}"))
        }
        other => Processed::Failed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::InstanceMeta;
    use std::io::Write;

    /// A producer that copies the first instance of the study as its "result".
    struct Copy;
    impl StudyProcessor for Copy {
        fn process(&self, job: &StudyJobInput, out: &Path) -> Processed {
            let dst = out.join("result.dcm");
            match std::fs::copy(&job.files[0], &dst) {
                Ok(_) => Processed::Produced {
                    files: vec![dst],
                    timings: vec![("copy".into(), 0.0)],
                    warning: None,
                },
                Err(e) => Processed::Failed(e.to_string()),
            }
        }
    }
    struct Panics;
    impl StudyProcessor for Panics {
        fn process(&self, _: &StudyJobInput, _: &Path) -> Processed {
            panic!("boom")
        }
    }
    struct NoSink;
    impl StageSink for NoSink {
        fn stage(&self, _: &str, _: f64) {}
    }

    fn receive_ct(store: &Store, dir: &Path) {
        let p =
            crate::phantom::generate(&crate::phantom::Params::new(3, crate::phantom::Size::Small));
        let study = dir.join("study");
        crate::phantom::study::write(
            &p,
            &study,
            crate::phantom::study::StudyOptions {
                syntax: crate::iod::transfer_syntax::Syntax::Explicit,
                extra_series: false,
                shuffle: false,
            },
        )
        .expect("phantom");
        let file =
            crate::pipeline::scan::files_under(&study.join("dicom")).expect("files")[0].clone();
        let (tmp, mut f) = store.temp_file().expect("tmp");
        f.write_all(&std::fs::read(&file).expect("read"))
            .expect("write");
        let obj = dicom_object::open_file(&file).expect("open");
        let t = |tag| {
            obj.element(tag)
                .expect("tag")
                .to_str()
                .expect("str")
                .trim_end_matches('\0')
                .to_string()
        };
        store
            .commit(
                &tmp,
                &InstanceMeta {
                    study_uid: t(tags::STUDY_INSTANCE_UID),
                    series_uid: t(tags::SERIES_INSTANCE_UID),
                    sop_instance_uid: t(tags::SOP_INSTANCE_UID),
                    sop_class_uid: t(tags::SOP_CLASS_UID),
                    transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                    modality: "CT".into(),
                    calling_ae: "T".into(),
                },
            )
            .expect("commit");
    }

    #[test]
    fn a_produced_result_is_queued_for_every_destination() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("data")).expect("open");
        receive_ct(&store, dir.path());
        store.promote_stable(0).expect("promote");
        let dests = vec!["a".to_string(), "b".to_string()];
        assert!(run_one(&store, &Copy, &dests, 0, &NoSink).expect("run"));
        assert!(!run_one(&store, &Copy, &dests, 0, &NoSink).expect("run"));
        let due = store.due_deliveries(crate::store::now_ms()).expect("due");
        assert_eq!(due.len(), 2);
        assert!(due[0].path.is_file());
        assert_eq!(due[0].sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
        assert_eq!(store.jobs(1).expect("jobs")[0].state, JobState::Delivering);
    }

    #[test]
    fn a_panicking_processor_fails_the_job_and_the_runner_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("data")).expect("open");
        receive_ct(&store, dir.path());
        store.promote_stable(0).expect("promote");
        assert!(run_one(&store, &Panics, &[], 0, &NoSink).expect("run"));
        let job = &store.jobs(1).expect("jobs")[0];
        assert_eq!(job.state, JobState::Failed);
        assert!(
            job.reason.as_deref().unwrap_or("").contains("boom"),
            "{job:?}"
        );
    }
}

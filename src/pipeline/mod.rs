//! The study job: reading DICOM files (`scan`), choosing the series to measure (`select`),
//! building its HU volume (`assemble`), the analysis in stage order (`analyze`), and running the
//! node's stable studies through it (`job`), each in a child process (`worker`).

pub mod analyze;
pub mod assemble;
pub mod job;
pub mod scan;
pub mod select;
pub mod worker;

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::SelectionConfig;
use crate::volume::Volume;

#[derive(Debug, Error)]
pub enum ReadStudyError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin} holds {} studies ({}); give one study at a time", .studies.len(), .studies.join(", "))]
    SeveralStudies {
        origin: String,
        studies: Vec<String>,
    },
    #[error(transparent)]
    Select(#[from] select::SelectError),
    #[error(transparent)]
    Assemble(#[from] assemble::AssembleError),
}

/// A study read from disk: the selection with its reasons, the volume, and files not read.
#[derive(Debug)]
pub struct Study {
    pub selection: select::Selection,
    pub volume: Volume,
    pub rejected: Vec<scan::Rejected>,
}

/// Read one study from a folder: scan, select, assemble.
pub fn read_study(dir: &Path, cfg: &SelectionConfig) -> Result<Study, ReadStudyError> {
    let files = scan::files_under(dir).map_err(|source| ReadStudyError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    read_study_files(files, &dir.display().to_string(), cfg)
}

/// Read one study from its files (`origin` names them in errors): scan, select, assemble.
pub fn read_study_files(
    files: Vec<PathBuf>,
    origin: &str,
    cfg: &SelectionConfig,
) -> Result<Study, ReadStudyError> {
    let scan = scan::scan_files(files);
    let mut studies = select::by_study(scan.frames);
    if studies.len() > 1 {
        return Err(ReadStudyError::SeveralStudies {
            origin: origin.to_string(),
            studies: studies
                .iter()
                .map(|(uid, frames)| format!("{uid}: {} images", frames.len()))
                .collect(),
        });
    }
    let frames = studies.pop_first().map(|(_, f)| f).unwrap_or_default();
    // A gap where a DICOM file could not be read is a broken file, not a slice the archive lacks:
    // it is reported, never filled. (Stray text or XML files beside the images do not count.)
    let mut cfg = cfg.clone();
    if scan.rejected.iter().any(|r| r.dicom) {
        cfg.max_filled_slices = 0;
    }
    let selection = select::select(frames, &cfg).map_err(|e| with_unread(e, &scan.rejected))?;
    let filled = selection.chosen.filled();
    if filled > 0 {
        tracing::warn!(
            series = %selection.chosen.series_uid,
            filled,
            "single missing slices filled by averaging their neighbours"
        );
    }
    let volume = assemble::assemble(&selection.chosen)?;
    Ok(Study {
        selection,
        volume,
        rejected: scan.rejected,
    })
}

/// When no series can be measured, the files that could not be read are among the reasons (a
/// malformed slice leaves a gap that is reported as missing slices otherwise).
fn with_unread(e: select::SelectError, unread: &[scan::Rejected]) -> select::SelectError {
    match e {
        select::SelectError::NoSuitableSeries {
            study_uid,
            mut skipped,
        } if !unread.is_empty() => {
            let first = &unread[0];
            let name = first.path.file_name().map_or_else(
                || first.path.display().to_string(),
                |n| n.to_string_lossy().to_string(),
            );
            skipped.push(select::Skipped {
                series_uid: String::new(),
                series_number: None,
                description: "files not read".into(),
                images: unread.len(),
                reason: format!(
                    "{} file(s) could not be read, {name} first: {}",
                    unread.len(),
                    first.reason
                ),
            });
            select::SelectError::NoSuitableSeries { study_uid, skipped }
        }
        select::SelectError::NoImages if !unread.is_empty() => {
            let first = &unread[0];
            select::SelectError::Unreadable {
                files: unread.len(),
                first: first.path.file_name().map_or_else(
                    || first.path.display().to_string(),
                    |n| n.to_string_lossy().to_string(),
                ),
                reason: first.reason.clone(),
            }
        }
        other => other,
    }
}

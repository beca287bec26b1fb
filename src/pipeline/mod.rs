//! The study job: reading DICOM files (`scan`), choosing the series to measure (`select`) and
//! building its HU volume (`assemble`). Later stages (inference, measurement, result objects)
//! are orchestrated from here too.

pub mod analyze;
pub mod assemble;
pub mod scan;
pub mod select;

use std::path::Path;

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
    #[error("{0} holds more than one study; give one study at a time")]
    SeveralStudies(String),
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
    let scan = scan::scan(dir).map_err(|source| ReadStudyError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut studies = select::by_study(scan.frames);
    if studies.len() > 1 {
        return Err(ReadStudyError::SeveralStudies(dir.display().to_string()));
    }
    let frames = studies.pop_first().map(|(_, f)| f).unwrap_or_default();
    let selection = select::select(frames, cfg)?;
    let volume = assemble::assemble(&selection.chosen)?;
    Ok(Study {
        selection,
        volume,
        rejected: scan.rejected,
    })
}

//! The only module that touches disk and the database: the spool of received instances and the
//! SQLite index of studies, series and instances.
//!
//! An instance is written to a temporary file, fsynced, renamed into the spool (and the folder
//! fsynced), then indexed in one transaction, all before the SCP answers Success: what was
//! acknowledged survives a `kill -9`. UIDs are validated before they become path components.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use thiserror::Error;

use crate::iod::uid;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("index database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{what} \"{value}\" is not a valid DICOM UID")]
    BadUid { what: &'static str, value: String },
    #[error("index lock poisoned")]
    Poisoned,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the index records of one received instance.
#[derive(Debug, Clone)]
pub struct InstanceMeta {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub modality: String,
    pub calling_ae: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    Stored(PathBuf),
    /// The SOP Instance UID was already stored; the new copy was discarded.
    Duplicate(PathBuf),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub studies: u64,
    pub series: u64,
    pub instances: u64,
}

pub struct Store {
    root: PathBuf,
    db: Mutex<Connection>,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    first_received TEXT NOT NULL,
    last_received TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    modality TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL REFERENCES series(series_uid),
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    sop_class_uid TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    received TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_study ON instances(study_uid);
";

impl Store {
    /// Open (or create) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        for d in [data_dir.join("spool"), data_dir.join("tmp")] {
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let db = Connection::open(data_dir.join("pulmo.sqlite"))?;
        db.execute_batch(SCHEMA)?;
        Ok(Store {
            root: data_dir.to_path_buf(),
            db: Mutex::new(db),
        })
    }

    /// A new temporary file in the store's own file system (so that rename is atomic).
    pub fn temp_file(&self) -> Result<(PathBuf, File), StoreError> {
        let path = self
            .root
            .join("tmp")
            .join(format!("{}.part", uuid::Uuid::new_v4()));
        let f = File::create(&path).map_err(io(&path))?;
        Ok((path, f))
    }

    /// Move a fully written, fsynced temporary file into the spool and index it. A SOP Instance
    /// UID already stored is not stored twice.
    pub fn commit(&self, tmp: &Path, m: &InstanceMeta) -> Result<Committed, StoreError> {
        for (what, v) in [
            ("StudyInstanceUID", &m.study_uid),
            ("SeriesInstanceUID", &m.series_uid),
            ("SOPInstanceUID", &m.sop_instance_uid),
            ("SOPClassUID", &m.sop_class_uid),
        ] {
            if !uid::is_valid(v) {
                return Err(StoreError::BadUid {
                    what,
                    value: v.clone(),
                });
            }
        }
        let db = self.db.lock().map_err(|_| StoreError::Poisoned)?;
        let existing: Option<String> = db
            .query_row(
                "SELECT path FROM instances WHERE sop_instance_uid = ?1",
                params![m.sop_instance_uid],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(p) = existing {
            std::fs::remove_file(tmp).ok();
            return Ok(Committed::Duplicate(PathBuf::from(p)));
        }
        let dir = self
            .root
            .join("spool")
            .join(&m.study_uid)
            .join(&m.series_uid);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(format!("{}.dcm", m.sop_instance_uid));
        let bytes = std::fs::metadata(tmp).map_err(io(tmp))?.len();
        std::fs::rename(tmp, &path).map_err(io(&path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))?;
        let now = crate::iod::common::now();
        let now = format!("{}{}", now.0, now.1);
        let mut db = db;
        let tx = db.transaction()?;
        tx.execute(
            "INSERT INTO studies (study_uid, first_received, last_received) VALUES (?1, ?2, ?2)
             ON CONFLICT(study_uid) DO UPDATE SET last_received = ?2",
            params![m.study_uid, now],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO series (series_uid, study_uid, modality) VALUES (?1, ?2, ?3)",
            params![m.series_uid, m.study_uid, m.modality],
        )?;
        tx.execute(
            "INSERT INTO instances (sop_instance_uid, series_uid, study_uid, sop_class_uid,
                transfer_syntax_uid, calling_ae, path, bytes, received)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                m.sop_instance_uid,
                m.series_uid,
                m.study_uid,
                m.sop_class_uid,
                m.transfer_syntax_uid,
                m.calling_ae,
                path.display().to_string(),
                bytes as i64,
                now
            ],
        )?;
        tx.commit()?;
        Ok(Committed::Stored(path))
    }

    pub fn counts(&self) -> Result<Counts, StoreError> {
        let db = self.db.lock().map_err(|_| StoreError::Poisoned)?;
        let n = |sql: &str| {
            db.query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|v| v as u64)
        };
        Ok(Counts {
            studies: n("SELECT COUNT(*) FROM studies")?,
            series: n("SELECT COUNT(*) FROM series")?,
            instances: n("SELECT COUNT(*) FROM instances")?,
        })
    }

    /// Path of a stored instance.
    pub fn instance_path(&self, sop_instance_uid: &str) -> Result<Option<PathBuf>, StoreError> {
        let db = self.db.lock().map_err(|_| StoreError::Poisoned)?;
        Ok(db
            .query_row(
                "SELECT path FROM instances WHERE sop_instance_uid = ?1",
                params![sop_instance_uid],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(PathBuf::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn meta(sop: &str) -> InstanceMeta {
        InstanceMeta {
            study_uid: "1.2.3".into(),
            series_uid: "1.2.3.4".into(),
            sop_instance_uid: sop.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            modality: "CT".into(),
            calling_ae: "SCU".into(),
        }
    }

    #[test]
    fn stores_indexes_and_deduplicates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let (p, mut f) = store.temp_file().expect("tmp");
        f.write_all(b"x").expect("write");
        let c = store.commit(&p, &meta("1.2.3.4.5")).expect("commit");
        assert!(matches!(c, Committed::Stored(_)));
        let (p2, _) = store.temp_file().expect("tmp");
        assert!(matches!(
            store.commit(&p2, &meta("1.2.3.4.5")).expect("commit"),
            Committed::Duplicate(_)
        ));
        assert!(!p2.exists());
        assert_eq!(
            store.counts().expect("counts"),
            Counts {
                studies: 1,
                series: 1,
                instances: 1
            }
        );
        // The index survives reopening.
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.counts().expect("counts").instances, 1);
    }

    #[test]
    fn uids_that_could_escape_the_spool_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        for bad in ["../../etc", "1.2/3", "", "1.2.3 "] {
            let (p, _) = store.temp_file().expect("tmp");
            let mut m = meta("1.2.3.9");
            m.study_uid = bad.into();
            assert!(
                matches!(store.commit(&p, &m), Err(StoreError::BadUid { .. })),
                "{bad:?}"
            );
        }
    }
}

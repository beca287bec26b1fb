//! Received instances: a temporary file (fsynced by the SCP), renamed into
//! `spool/<study>/<series>/<sop>.dcm`, the folder fsynced, then indexed, all before Success.
//! UIDs are validated before they become path components.

use std::fs::File;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, io, now_ms};
use crate::iod::uid;

/// What the index records of one received instance (also in each journal record, as JSON).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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

/// Leftovers of transfers that never completed: never acknowledged, safe to delete.
pub(super) fn remove_partial_files(tmp: &Path) {
    if let Ok(entries) = std::fs::read_dir(tmp) {
        for e in entries.flatten() {
            std::fs::remove_file(e.path()).ok();
        }
    }
}

fn check_uids(m: &InstanceMeta) -> Result<(), StoreError> {
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
    Ok(())
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl Store {
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
        let path = self.spool_path(m)?;
        if let Some(p) = self.duplicate_of(m)? {
            std::fs::remove_file(tmp).ok();
            return Ok(Committed::Duplicate(p));
        }
        let mut db = self.conn()?;
        let spool = self.root.join("spool");
        let study_dir = spool.join(&m.study_uid);
        let dir = study_dir.join(&m.series_uid);
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            // New folders' own entries must be durable too.
            fsync_dir(&study_dir)?;
            fsync_dir(&spool)?;
        }
        let bytes = std::fs::metadata(tmp).map_err(io(tmp))?.len();
        std::fs::rename(tmp, &path).map_err(io(&path))?;
        fsync_dir(&dir)?;
        let tx = db.transaction()?;
        index(&tx, m, &path, bytes, true)?;
        tx.commit()?;
        Ok(Committed::Stored(path))
    }

    /// Where an instance's spool file goes; its UIDs are checked before they become a path.
    pub(super) fn spool_path(&self, m: &InstanceMeta) -> Result<PathBuf, StoreError> {
        check_uids(m)?;
        Ok(self
            .root
            .join("spool")
            .join(&m.study_uid)
            .join(&m.series_uid)
            .join(format!("{}.dcm", m.sop_instance_uid)))
    }

    /// Where an instance with `m`'s SOP Instance UID is already stored, if it is. A study being
    /// sent again is still receiving: it is not stable before that ends.
    pub(super) fn duplicate_of(&self, m: &InstanceMeta) -> Result<Option<PathBuf>, StoreError> {
        let db = self.conn()?;
        let existing: Option<String> = db
            .prepare_cached("SELECT path FROM instances WHERE sop_instance_uid = ?1")?
            .query_row(params![m.sop_instance_uid], |r| r.get(0))
            .optional()?;
        if existing.is_some() {
            db.execute(
                "UPDATE studies SET last_received_ms = ?2 WHERE study_uid = ?1",
                params![m.study_uid, now_ms()],
            )?;
        }
        Ok(existing.map(PathBuf::from))
    }

    /// Path of a stored instance.
    pub fn instance_path(&self, sop_instance_uid: &str) -> Result<Option<PathBuf>, StoreError> {
        let db = self.conn()?;
        Ok(db
            .query_row(
                "SELECT path FROM instances WHERE sop_instance_uid = ?1",
                params![sop_instance_uid],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(PathBuf::from))
    }

    /// Index every spool file the index does not know (after a power loss took the index's last
    /// commits): the file was complete and fsynced before its rename, so it may have been
    /// acknowledged. Returns how many were re-indexed.
    pub(super) fn reconcile(&self) -> Result<usize, StoreError> {
        let spool = self.root.join("spool");
        let mut missing = Vec::new();
        {
            let db = self.conn()?;
            let mut known = db.prepare("SELECT 1 FROM instances WHERE path = ?1")?;
            for e in walkdir::WalkDir::new(&spool)
                .into_iter()
                .filter_map(Result::ok)
            {
                if e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "part") {
                    // The materialiser's unfinished copy: its record is replayed from the journal.
                    std::fs::remove_file(e.path()).ok();
                } else if e.file_type().is_file() {
                    let p = e.path().display().to_string();
                    if !known.exists(params![p])? {
                        missing.push(e.into_path());
                    }
                }
            }
        }
        let mut n = 0;
        for path in missing {
            match read_meta(&path) {
                Ok(m) => {
                    let bytes = std::fs::metadata(&path).map_err(io(&path))?.len();
                    let mut db = self.conn()?;
                    let tx = db.transaction()?;
                    index(&tx, &m, &path, bytes, true)?;
                    tx.commit()?;
                    n += 1;
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "unreadable spool file left in place");
                }
            }
        }
        Ok(n)
    }
}

/// Insert one instance (and its study and series) into the index; `materialised`: its spool
/// file is written (false while it is only in the journal).
pub(super) fn index(
    tx: &rusqlite::Transaction<'_>,
    m: &InstanceMeta,
    path: &Path,
    bytes: u64,
    materialised: bool,
) -> Result<(), StoreError> {
    let now = now_ms();
    tx.prepare_cached(
        "INSERT INTO studies (study_uid, first_received_ms, last_received_ms) VALUES (?1, ?2, ?2)
         ON CONFLICT(study_uid) DO UPDATE SET last_received_ms = ?2",
    )?
    .execute(params![m.study_uid, now])?;
    tx.prepare_cached(
        "INSERT OR IGNORE INTO series (series_uid, study_uid, modality) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![m.series_uid, m.study_uid, m.modality])?;
    tx.prepare_cached(
        "INSERT INTO instances (sop_instance_uid, series_uid, study_uid, sop_class_uid,
            transfer_syntax_uid, calling_ae, path, bytes, received_ms, materialised)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        m.sop_instance_uid,
        m.series_uid,
        m.study_uid,
        m.sop_class_uid,
        m.transfer_syntax_uid,
        m.calling_ae,
        path.display().to_string(),
        bytes as i64,
        now,
        materialised
    ])?;
    Ok(())
}

/// A text attribute as the index stores it: padding removed, empty when absent.
pub(crate) fn text_of(obj: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

/// The index attributes of a spool file, from its header.
fn read_meta(path: &Path) -> Result<InstanceMeta, String> {
    crate::dataset::check_file(path, crate::dataset::MAX_FILE_BYTES).map_err(|e| e.to_string())?;
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| e.to_string())?;
    let text = |tag| text_of(&obj, tag);
    let m = InstanceMeta {
        study_uid: text(tags::STUDY_INSTANCE_UID),
        series_uid: text(tags::SERIES_INSTANCE_UID),
        sop_instance_uid: text(tags::SOP_INSTANCE_UID),
        sop_class_uid: text(tags::SOP_CLASS_UID),
        transfer_syntax_uid: obj
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string(),
        modality: text(tags::MODALITY),
        calling_ae: "(recovered)".into(),
    };
    check_uids(&m).map_err(|e| e.to_string())?;
    Ok(m)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::Counts;
    use std::io::Write;

    pub(crate) fn meta(sop: &str) -> InstanceMeta {
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
                instances: 1,
                in_journal: 0,
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

    #[test]
    fn partial_files_are_removed_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let (p, _) = store.temp_file().expect("tmp");
        assert!(p.exists());
        drop(store);
        let _store = Store::open(dir.path()).expect("reopen");
        assert!(!p.exists(), "a partial transfer was left behind");
    }
}

//! The only module that touches disk and the database: the spool of received instances, the
//! SQLite index of studies, series and instances, study jobs and the delivery outbox.
//!
//! - `spool`: instances written durably before the SCP answers Success, and indexed.
//! - `jobs`: study-stable detection and the job states of DESIGN.md.
//! - `outbox`: one delivery row per (result object, destination), with back-off and parking.
//!
//! Every state change is one SQLite transaction, so a `kill -9` at any point leaves a state that
//! the next start resumes from. Behind `Store` so that a distributed index is a swap (DESIGN.md).

pub mod jobs;
pub mod journal;
pub mod outbox;
pub mod spool;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use rusqlite::Connection;
use thiserror::Error;

pub use jobs::{Job, JobState, StudyJobInput};
pub use journal::{Journal, JournalConfig, RecordWriter};
pub use outbox::{Delivery, DeliveryState, Destination as OutboxDestination};
pub use spool::{Committed, InstanceMeta};

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
    #[error("{0}")]
    NotFound(String),
    #[error("the data directory {0} is in use by another pulmo process")]
    InUse(PathBuf),
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Start writing `len` bytes at `offset` of `file` to the disk without waiting for it (Linux
/// `sync_file_range`; a length of 0 means up to the end), so that a later sync finds them there
/// already. Only an optimisation: durability still comes from that sync.
pub(crate) fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open file descriptor; this only starts I/O.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Milliseconds since the Unix epoch: the index's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub studies: u64,
    pub series: u64,
    pub instances: u64,
    /// Instances durable in the journal whose spool files are still to be written.
    pub in_journal: u64,
}

pub struct Store {
    root: PathBuf,
    db: Mutex<Connection>,
    /// Set by `start_journal` (`pulmo serve`).
    journal: OnceLock<Arc<Journal>>,
    /// The data directory's lock, held by the process that owns it (`open`): recovery and the
    /// journal must never run twice on the same data.
    _lock: Option<std::fs::File>,
}

/// Take the data directory's exclusive lock (released by the kernel when the process ends,
/// `kill -9` included).
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::os::fd::AsRawFd;
    let path = data_dir.join("pulmo.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    // SAFETY: a valid open file descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(StoreError::InUse(data_dir.to_path_buf()));
    }
    Ok(f)
}

/// `synchronous = NORMAL` in WAL mode: a commit survives the process being killed (the WAL is in
/// the OS's hands); the instance files themselves are fsynced before Success, and after an unclean
/// stop `open` re-indexes any spool file that a power loss took out of the index (`spool::reconcile`).
const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = ON;
PRAGMA busy_timeout = 10000;
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    first_received_ms INTEGER NOT NULL,
    last_received_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    modality TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    id INTEGER PRIMARY KEY,
    sop_instance_uid TEXT NOT NULL UNIQUE,
    series_uid TEXT NOT NULL REFERENCES series(series_uid),
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    sop_class_uid TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    -- 0 while the instance is durable only in the journal: its spool file is being written.
    materialised INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS instances_by_study ON instances(study_uid, id);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    state TEXT NOT NULL CHECK (state IN
        ('stable', 'running', 'delivering', 'done', 'skipped', 'failed')),
    reason TEXT,
    -- The job's input: the study's instances with id <= up_to (set again when it starts).
    up_to INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
-- One queued or running job per study, whatever races the workers run into.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_one_open_per_study
    ON jobs(study_uid) WHERE state IN ('stable', 'running');
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    destination TEXT NOT NULL,
    path TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    updated_ms INTEGER NOT NULL,
    UNIQUE (job_id, destination, sop_instance_uid)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(state, next_attempt_ms);
PRAGMA user_version = 2;
";

/// Create the schema, and bring an index made by an older pulmo up to it.
fn migrate(db: &Connection) -> Result<(), StoreError> {
    let has_instances: bool = db
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'instances'")?
        .exists([])?;
    if has_instances {
        let flagged = db
            .prepare("SELECT 1 FROM pragma_table_info('instances') WHERE name = 'materialised'")?
            .exists([])?;
        if !flagged {
            db.execute_batch(
                "ALTER TABLE instances ADD COLUMN materialised INTEGER NOT NULL DEFAULT 1",
            )?;
        }
    }
    db.execute_batch(SCHEMA)?;
    Ok(())
}

/// Written at a clean stop, removed at start: its absence at start means the last run ended
/// abruptly, and the spool is reconciled with the index.
const CLEAN_MARK: &str = "clean-shutdown";

impl Store {
    /// Open (or create) the store under `data_dir`, recover from an unclean stop, and resume jobs
    /// that were running.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        for d in [
            data_dir.join("spool"),
            data_dir.join("tmp"),
            data_dir.join("results"),
        ] {
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let lock = lock_data_dir(data_dir)?;
        let db = Connection::open(data_dir.join("pulmo.sqlite"))?;
        migrate(&db)?;
        let store = Store {
            root: data_dir.to_path_buf(),
            db: Mutex::new(db),
            journal: OnceLock::new(),
            _lock: Some(lock),
        };
        let mark = data_dir.join(CLEAN_MARK);
        let clean = mark.exists();
        spool::remove_partial_files(&store.root.join("tmp"));
        let replayed = journal::recover(&store)?;
        if replayed > 0 {
            tracing::info!(
                instances = replayed,
                "received instances written from the journal to the spool"
            );
        }
        if !clean {
            let n = store.reconcile()?;
            if n > 0 {
                tracing::warn!(
                    instances = n,
                    "re-indexed spool files missing from the index"
                );
            }
        }
        std::fs::remove_file(&mark).ok();
        Ok(store)
    }

    /// Open the index only, to read or change queue state beside a running node (`pulmo status`,
    /// `pulmo retry`): no recovery, no clean-stop bookkeeping.
    pub fn open_existing(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join("pulmo.sqlite");
        if !path.is_file() {
            return Err(StoreError::NotFound(format!(
                "no pulmo index at {} (has `pulmo serve` run with this data_dir?)",
                path.display()
            )));
        }
        let db = Connection::open(path)?;
        migrate(&db)?;
        Ok(Store {
            root: data_dir.to_path_buf(),
            db: Mutex::new(db),
            journal: OnceLock::new(),
            _lock: None,
        })
    }

    /// Record a clean stop: the next start need not reconcile the spool. The journal is
    /// written out first.
    pub fn mark_clean_shutdown(&self) -> Result<(), StoreError> {
        if let Some(j) = self.journal.get() {
            j.shutdown();
        }
        let db = self.conn()?;
        db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        let mark = self.root.join(CLEAN_MARK);
        std::fs::write(&mark, b"").map_err(io(&mark))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.db.lock().map_err(|_| StoreError::Poisoned)
    }

    /// Whether the index answers (for /healthz).
    pub fn healthy(&self) -> bool {
        self.conn()
            .and_then(|db| Ok(db.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .is_ok()
    }

    /// Rows of `table` in each of `states` (zeros included), by its `state` column.
    fn count_by_state<S: Copy>(
        &self,
        table: &str,
        states: &[S],
        name: impl Fn(S) -> &'static str,
    ) -> Result<Vec<(S, u64)>, StoreError> {
        let db = self.conn()?;
        let mut q = db.prepare(&format!(
            "SELECT state, COUNT(*) FROM {table} GROUP BY state"
        ))?;
        let found: Vec<(String, i64)> = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(states
            .iter()
            .map(|&s| {
                let n = found
                    .iter()
                    .find(|(k, _)| k == name(s))
                    .map_or(0, |(_, n)| *n as u64);
                (s, n)
            })
            .collect())
    }

    pub fn counts(&self) -> Result<Counts, StoreError> {
        let db = self.conn()?;
        let n = |sql: &str| {
            db.query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|v| v as u64)
        };
        Ok(Counts {
            studies: n("SELECT COUNT(*) FROM studies")?,
            series: n("SELECT COUNT(*) FROM series")?,
            instances: n("SELECT COUNT(*) FROM instances")?,
            in_journal: n("SELECT COUNT(*) FROM instances WHERE materialised = 0")?,
        })
    }
}

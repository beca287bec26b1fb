//! Study jobs (DESIGN.md, "State and the job lifecycle"): receiving → stable → running →
//! delivering → done, or skipped(reason) / failed(reason). A study is *receiving* while it has
//! instances that no job covers; it becomes a *stable* job when nothing has arrived for
//! `stable_after`. Each transition is one transaction; `resume` puts jobs that were running when
//! the node stopped back in the queue.

use std::path::PathBuf;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::outbox::ResultObject;
use super::{Store, StoreError, now_ms};

/// A job that was interrupted this many times (the node killed while analysing it) is failed
/// rather than tried again: it may be what brings the node down.
pub const MAX_JOB_ATTEMPTS: i64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Stable,
    Running,
    Delivering,
    Done,
    Skipped,
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Stable,
        JobState::Running,
        JobState::Delivering,
        JobState::Done,
        JobState::Skipped,
        JobState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Stable => "stable",
            JobState::Running => "running",
            JobState::Delivering => "delivering",
            JobState::Done => "done",
            JobState::Skipped => "skipped",
            JobState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> JobState {
        JobState::ALL
            .into_iter()
            .find(|j| j.as_str() == s)
            .unwrap_or(JobState::Failed)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: i64,
    pub study_uid: String,
    pub state: JobState,
    pub reason: Option<String>,
    pub instances: i64,
    pub attempts: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What a worker needs to run a job: its study's instance files as they were when it started.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StudyJobInput {
    pub job_id: i64,
    pub study_uid: String,
    pub files: Vec<PathBuf>,
    pub attempt: i64,
}

/// A study as `pulmo status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StudyRow {
    pub study_uid: String,
    pub instances: i64,
    pub first_received_ms: i64,
    pub last_received_ms: i64,
    /// "receiving" while instances arrive that no job covers yet, else the latest job's state.
    pub state: String,
    pub latest_job: Option<i64>,
}

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        study_uid: r.get(1)?,
        state: JobState::parse(&r.get::<_, String>(2)?),
        reason: r.get(3)?,
        instances: r.get(4)?,
        attempts: r.get(5)?,
        created_ms: r.get(6)?,
        updated_ms: r.get(7)?,
    })
}

const JOB_COLUMNS: &str = "j.id, j.study_uid, j.state, j.reason,
    (SELECT COUNT(*) FROM instances i WHERE i.study_uid = j.study_uid AND i.id <= j.up_to),
    j.attempts, j.created_ms, j.updated_ms";

impl Store {
    /// Studies quiet for `stable_after_ms` that hold instances no job has covered, and have no
    /// job queued or running, become stable jobs. Returns the new jobs' ids.
    pub fn promote_stable(&self, stable_after_ms: i64) -> Result<Vec<i64>, StoreError> {
        let now = now_ms();
        let mut db = self.conn()?;
        let tx = db.transaction()?;
        let ready: Vec<(String, i64)> = {
            let mut q = tx.prepare(
                "SELECT s.study_uid, (SELECT MAX(id) FROM instances i WHERE i.study_uid = s.study_uid)
                 FROM studies s
                 WHERE s.last_received_ms <= ?1
                   AND EXISTS (SELECT 1 FROM instances i WHERE i.study_uid = s.study_uid
                       AND i.id > COALESCE((SELECT MAX(up_to) FROM jobs j
                                            WHERE j.study_uid = s.study_uid), 0))
                   AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.study_uid = s.study_uid
                                   AND j.state IN ('stable', 'running'))",
            )?;
            q.query_map(params![now - stable_after_ms], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?
        };
        let mut ids = Vec::new();
        for (study, up_to) in ready {
            tx.execute(
                "INSERT INTO jobs (study_uid, state, up_to, created_ms, updated_ms)
                 VALUES (?1, 'stable', ?2, ?3, ?3)",
                params![study, up_to, now],
            )?;
            ids.push(tx.last_insert_rowid());
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Take the oldest stable job whose study is still quiet and mark it running. Its input is
    /// fixed now: every instance of the study received so far. A job interrupted
    /// `MAX_JOB_ATTEMPTS` times is failed instead.
    pub fn claim_job(&self, stable_after_ms: i64) -> Result<Option<StudyJobInput>, StoreError> {
        let now = now_ms();
        let mut db = self.conn()?;
        let tx = db.transaction()?;
        loop {
            let next: Option<(i64, String, i64)> = tx
                .query_row(
                    "SELECT j.id, j.study_uid, j.attempts FROM jobs j
                     JOIN studies s ON s.study_uid = j.study_uid
                     WHERE j.state = 'stable' AND s.last_received_ms <= ?1
                       AND NOT EXISTS (SELECT 1 FROM instances i
                                       WHERE i.study_uid = j.study_uid AND i.materialised = 0)
                     ORDER BY j.id LIMIT 1",
                    params![now - stable_after_ms],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((id, study, attempts)) = next else {
                tx.commit()?;
                return Ok(None);
            };
            if attempts >= MAX_JOB_ATTEMPTS {
                tx.execute(
                    "UPDATE jobs SET state = 'failed', reason = ?2, updated_ms = ?3 WHERE id = ?1",
                    params![
                        id,
                        format!(
                            "the analysis was interrupted {attempts} times (the node stopped \
                             during it); not tried again"
                        ),
                        now
                    ],
                )?;
                continue;
            }
            tx.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_ms = ?2,
                    up_to = (SELECT MAX(id) FROM instances WHERE study_uid = ?3)
                 WHERE id = ?1",
                params![id, now, study],
            )?;
            let files: Vec<PathBuf> = {
                let mut q = tx.prepare(
                    "SELECT path FROM instances WHERE study_uid = ?1
                     AND id <= (SELECT up_to FROM jobs WHERE id = ?2) ORDER BY id",
                )?;
                q.query_map(params![study, id], |r| r.get::<_, String>(0))?
                    .map(|p| p.map(PathBuf::from))
                    .collect::<Result<_, _>>()?
            };
            tx.commit()?;
            return Ok(Some(StudyJobInput {
                job_id: id,
                study_uid: study,
                files,
                attempt: attempts + 1,
            }));
        }
    }

    /// Where a job writes its result objects.
    pub fn results_dir(&self, job_id: i64) -> PathBuf {
        self.root.join("results").join(job_id.to_string())
    }

    /// The analysis produced `results` (written and fsynced): one delivery per object and
    /// destination, and the job moves to delivering (done when there is no destination), in one
    /// transaction. `warning` (a failed quality check, in words) stays as the job's reason.
    pub fn job_produced(
        &self,
        job_id: i64,
        results: &[ResultObject],
        destinations: &[String],
        warning: Option<&str>,
    ) -> Result<JobState, StoreError> {
        let now = now_ms();
        let mut db = self.conn()?;
        let tx = db.transaction()?;
        for d in destinations {
            for r in results {
                tx.execute(
                    "INSERT OR IGNORE INTO deliveries (job_id, destination, path, sop_class_uid,
                        sop_instance_uid, state, next_attempt_ms, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6)",
                    params![
                        job_id,
                        d,
                        r.path.display().to_string(),
                        r.sop_class_uid,
                        r.sop_instance_uid,
                        now
                    ],
                )?;
            }
        }
        let state = if destinations.is_empty() || results.is_empty() {
            JobState::Done
        } else {
            JobState::Delivering
        };
        tx.execute(
            "UPDATE jobs SET state = ?2, reason = ?4, updated_ms = ?3 WHERE id = ?1",
            params![job_id, state.as_str(), now, warning],
        )?;
        tx.commit()?;
        Ok(state)
    }

    /// The job ends without results: skipped (nothing to measure) or failed, with the reason.
    pub fn job_ended(&self, job_id: i64, state: JobState, reason: &str) -> Result<(), StoreError> {
        let db = self.conn()?;
        db.execute(
            "UPDATE jobs SET state = ?2, reason = ?3, updated_ms = ?4 WHERE id = ?1",
            params![job_id, state.as_str(), reason, now_ms()],
        )?;
        Ok(())
    }

    /// At start: jobs that were running go back to stable, to be analysed again (result UIDs are
    /// deterministic, so a re-run replaces rather than duplicates). Returns how many.
    pub fn resume_jobs(&self) -> Result<usize, StoreError> {
        let db = self.conn()?;
        Ok(db.execute(
            "UPDATE jobs SET state = 'stable', updated_ms = ?1 WHERE state = 'running'",
            params![now_ms()],
        )?)
    }

    /// At a clean stop: jobs still running go back to stable without counting the attempt (the
    /// stop was not the study's fault).
    pub fn requeue_running_jobs(&self) -> Result<usize, StoreError> {
        let db = self.conn()?;
        Ok(db.execute(
            "UPDATE jobs SET state = 'stable', attempts = MAX(attempts - 1, 0), updated_ms = ?1
             WHERE state = 'running'",
            params![now_ms()],
        )?)
    }

    pub fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
        let db = self.conn()?;
        Ok(db
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = ?1"),
                params![id],
                job_row,
            )
            .optional()?)
    }

    /// Jobs, newest first.
    pub fn jobs(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let db = self.conn()?;
        let mut q = db.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs j ORDER BY j.id DESC LIMIT ?1"
        ))?;
        Ok(q.query_map(params![limit as i64], job_row)?
            .collect::<Result<_, _>>()?)
    }

    /// How many jobs are in each state (every state listed, zeros included).
    pub fn jobs_by_state(&self) -> Result<Vec<(JobState, u64)>, StoreError> {
        self.count_by_state("jobs", &JobState::ALL, |s| s.as_str())
    }

    /// Studies, most recently received first.
    pub fn studies(&self, limit: usize) -> Result<Vec<StudyRow>, StoreError> {
        let db = self.conn()?;
        let mut q = db.prepare(
            "SELECT s.study_uid,
                (SELECT COUNT(*) FROM instances i WHERE i.study_uid = s.study_uid),
                s.first_received_ms, s.last_received_ms,
                (SELECT MAX(id) FROM jobs j WHERE j.study_uid = s.study_uid),
                (SELECT state FROM jobs j WHERE j.study_uid = s.study_uid ORDER BY id DESC LIMIT 1),
                EXISTS (SELECT 1 FROM instances i WHERE i.study_uid = s.study_uid
                    AND i.id > COALESCE((SELECT MAX(up_to) FROM jobs j
                                         WHERE j.study_uid = s.study_uid), 0))
             FROM studies s ORDER BY s.last_received_ms DESC LIMIT ?1",
        )?;
        Ok(q.query_map(params![limit as i64], |r| {
            let latest: Option<String> = r.get(5)?;
            let uncovered: bool = r.get(6)?;
            Ok(StudyRow {
                study_uid: r.get(0)?,
                instances: r.get(1)?,
                first_received_ms: r.get(2)?,
                last_received_ms: r.get(3)?,
                latest_job: r.get(4)?,
                state: match latest {
                    Some(s) if !uncovered || s == "stable" => s,
                    _ => "receiving".into(),
                },
            })
        })?
        .collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::spool::InstanceMeta;
    use std::io::Write;

    fn receive(store: &Store, study: &str, sop: &str) {
        let (p, mut f) = store.temp_file().expect("tmp");
        f.write_all(b"x").expect("write");
        store
            .commit(
                &p,
                &InstanceMeta {
                    study_uid: study.into(),
                    series_uid: format!("{study}.1"),
                    sop_instance_uid: sop.into(),
                    sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                    transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                    modality: "CT".into(),
                    calling_ae: "T".into(),
                },
            )
            .expect("commit");
    }

    #[test]
    fn a_quiet_study_becomes_one_job_and_late_instances_a_second() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        receive(&store, "1.2.3", "1.2.3.1.1");
        receive(&store, "1.2.3", "1.2.3.1.2");
        // Not quiet for an hour yet: no job.
        assert!(store.promote_stable(3_600_000).expect("promote").is_empty());
        let ids = store.promote_stable(0).expect("promote");
        assert_eq!(ids.len(), 1);
        // Promoting again creates nothing: the job covers every instance.
        assert!(store.promote_stable(0).expect("promote").is_empty());
        // An instance arriving while the job is queued joins it.
        receive(&store, "1.2.3", "1.2.3.1.3");
        assert!(store.promote_stable(0).expect("promote").is_empty());
        let job = store.claim_job(0).expect("claim").expect("a job");
        assert_eq!(job.files.len(), 3);
        assert!(store.claim_job(0).expect("claim").is_none());
        // Late instance while running: a second job only after the first has ended.
        receive(&store, "1.2.3", "1.2.3.1.4");
        assert!(store.promote_stable(0).expect("promote").is_empty());
        assert_eq!(
            store.studies(10).expect("studies")[0].state,
            "receiving",
            "uncovered instances show as receiving"
        );
        store
            .job_produced(job.job_id, &[], &[], None)
            .expect("produced");
        assert_eq!(store.promote_stable(0).expect("promote").len(), 1);
        let second = store.claim_job(0).expect("claim").expect("second job");
        assert_eq!(second.files.len(), 4);
    }

    #[test]
    fn running_jobs_resume_and_a_job_that_keeps_crashing_is_failed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        receive(&store, "1.2.4", "1.2.4.1.1");
        store.promote_stable(0).expect("promote");
        for attempt in 1..=MAX_JOB_ATTEMPTS {
            let job = store.claim_job(0).expect("claim").expect("job");
            assert_eq!(job.attempt, attempt);
            // The node dies here; at the next start the job is queued again.
            assert_eq!(store.resume_jobs().expect("resume"), 1);
        }
        assert!(store.claim_job(0).expect("claim").is_none());
        let jobs = store.jobs(10).expect("jobs");
        assert_eq!(jobs[0].state, JobState::Failed);
        assert!(
            jobs[0]
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("interrupted")
        );
    }
}

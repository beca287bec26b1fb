//! The delivery outbox: one row per (result object, destination). A row is pending until the
//! destination acknowledges it (delivered), or until it is parked as failed with the reason in
//! words; `pulmo retry` puts parked rows back. When a job's last row settles, the job is done (all
//! delivered) or failed (some parked), in the same transaction.

use std::path::PathBuf;

use rusqlite::{Transaction, params};
use serde::Serialize;

use super::{Store, StoreError, now_ms};

/// A result object written by a job, as the outbox needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultObject {
    pub path: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 3] = [
        DeliveryState::Pending,
        DeliveryState::Delivered,
        DeliveryState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> DeliveryState {
        DeliveryState::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .unwrap_or(DeliveryState::Failed)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub job_id: i64,
    pub study_uid: String,
    pub destination: String,
    pub path: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub state: DeliveryState,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    pub updated_ms: i64,
}

/// Where to send, as the outbox is told by the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub name: String,
    pub ae_title: String,
    pub host: String,
    pub port: u16,
}

/// Which parked deliveries `retry` puts back.
#[derive(Debug, Clone, Copy)]
pub enum Retry {
    One(i64),
    AllFailed,
}

const COLUMNS: &str = "d.id, d.job_id, j.study_uid, d.destination, d.path, d.sop_class_uid,
    d.sop_instance_uid, d.state, d.attempts, d.next_attempt_ms, d.last_error, d.updated_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        job_id: r.get(1)?,
        study_uid: r.get(2)?,
        destination: r.get(3)?,
        path: PathBuf::from(r.get::<_, String>(4)?),
        sop_class_uid: r.get(5)?,
        sop_instance_uid: r.get(6)?,
        state: DeliveryState::parse(&r.get::<_, String>(7)?),
        attempts: r.get(8)?,
        next_attempt_ms: r.get(9)?,
        last_error: r.get(10)?,
        updated_ms: r.get(11)?,
    })
}

/// When none of a job's deliveries is pending any more, the job ends: done, or failed naming
/// what was parked.
fn settle_job(tx: &Transaction<'_>, delivery_id: i64, now: i64) -> Result<(), StoreError> {
    let job_id: i64 = tx.query_row(
        "SELECT job_id FROM deliveries WHERE id = ?1",
        params![delivery_id],
        |r| r.get(0),
    )?;
    let (pending, failed, total): (i64, i64, i64) = tx.query_row(
        "SELECT SUM(state = 'pending'), SUM(state = 'failed'), COUNT(*)
         FROM deliveries WHERE job_id = ?1",
        params![job_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    if pending > 0 {
        return Ok(());
    }
    if failed == 0 {
        // The reason stays: a done job's reason is its failed quality check, if any.
        tx.execute(
            "UPDATE jobs SET state = 'done', updated_ms = ?2
             WHERE id = ?1 AND state = 'delivering'",
            params![job_id, now],
        )?;
    } else {
        let first: String = tx.query_row(
            "SELECT destination || ': ' || COALESCE(last_error, 'failed') FROM deliveries
             WHERE job_id = ?1 AND state = 'failed' ORDER BY id LIMIT 1",
            params![job_id],
            |r| r.get(0),
        )?;
        tx.execute(
            "UPDATE jobs SET state = 'failed', reason = ?2, updated_ms = ?3
             WHERE id = ?1 AND state = 'delivering'",
            params![
                job_id,
                format!("{failed} of {total} deliveries parked (first: {first}); `pulmo retry --all-failed` sends them again"),
                now
            ],
        )?;
    }
    Ok(())
}

impl Store {
    /// Pending deliveries whose next attempt is due, oldest first.
    pub fn due_deliveries(&self, now: i64) -> Result<Vec<Delivery>, StoreError> {
        let db = self.conn()?;
        let mut q = db.prepare(&format!(
            "SELECT {COLUMNS} FROM deliveries d JOIN jobs j ON j.id = d.job_id
             WHERE d.state = 'pending' AND d.next_attempt_ms <= ?1 ORDER BY d.id"
        ))?;
        Ok(q.query_map(params![now], row)?.collect::<Result<_, _>>()?)
    }

    /// Deliveries, newest first.
    pub fn deliveries(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let db = self.conn()?;
        let mut q = db.prepare(&format!(
            "SELECT {COLUMNS} FROM deliveries d JOIN jobs j ON j.id = d.job_id
             ORDER BY d.id DESC LIMIT ?1"
        ))?;
        Ok(q.query_map(params![limit as i64], row)?
            .collect::<Result<_, _>>()?)
    }

    pub fn deliveries_by_state(&self) -> Result<Vec<(DeliveryState, u64)>, StoreError> {
        self.count_by_state("deliveries", &DeliveryState::ALL, |s| s.as_str())
    }

    /// The destination acknowledged the object.
    pub fn delivered(&self, id: i64) -> Result<(), StoreError> {
        let now = now_ms();
        let mut db = self.conn()?;
        let tx = db.transaction()?;
        tx.execute(
            "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, last_error = NULL,
                updated_ms = ?2 WHERE id = ?1 AND state = 'pending'",
            params![id, now],
        )?;
        settle_job(&tx, id, now)?;
        tx.commit()?;
        Ok(())
    }

    /// An attempt failed: try again at `retry_at`, or park the row (`None`) with `error`.
    pub fn delivery_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut db = self.conn()?;
        let tx = db.transaction()?;
        match retry_at {
            Some(at) => tx.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?2,
                    next_attempt_ms = ?3, updated_ms = ?4 WHERE id = ?1 AND state = 'pending'",
                params![id, error, at, now],
            )?,
            None => tx.execute(
                "UPDATE deliveries SET state = 'failed', attempts = attempts + 1, last_error = ?2,
                    updated_ms = ?3 WHERE id = ?1 AND state = 'pending'",
                params![id, error, now],
            )?,
        };
        settle_job(&tx, id, now)?;
        tx.commit()?;
        Ok(())
    }

    /// Put parked deliveries back in the queue, due now, with their attempts reset; their jobs
    /// go back to delivering. Returns how many.
    pub fn retry_deliveries(&self, which: Retry) -> Result<usize, StoreError> {
        let now = now_ms();
        let mut db = self.conn()?;
        let tx = db.transaction()?;
        let (filter, id) = match which {
            Retry::One(id) => ("id = ?2", id),
            Retry::AllFailed => ("?2 = ?2", 0),
        };
        if let Retry::One(id) = which {
            let state: Option<String> = rusqlite::OptionalExtension::optional(tx.query_row(
                "SELECT state FROM deliveries WHERE id = ?1",
                params![id],
                |r| r.get(0),
            ))?;
            match state.as_deref() {
                None => return Err(StoreError::NotFound(format!("no delivery {id}"))),
                Some("failed") => {}
                Some(s) => {
                    return Err(StoreError::NotFound(format!(
                        "delivery {id} is {s}, not failed: nothing to retry"
                    )));
                }
            }
        }
        tx.execute(
            &format!(
                "UPDATE jobs SET state = 'delivering', reason = NULL, updated_ms = ?1
                 WHERE id IN (SELECT job_id FROM deliveries WHERE state = 'failed' AND {filter})"
            ),
            params![now, id],
        )?;
        let n = tx.execute(
            &format!(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_ms = ?1,
                    updated_ms = ?1 WHERE state = 'failed' AND {filter}"
            ),
            params![now, id],
        )?;
        tx.commit()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JobState;
    use crate::store::spool::InstanceMeta;
    use std::io::Write;

    fn job_with_results(store: &Store, n: usize, dests: &[&str]) -> i64 {
        let (p, mut f) = store.temp_file().expect("tmp");
        f.write_all(b"x").expect("write");
        store
            .commit(
                &p,
                &InstanceMeta {
                    study_uid: "1.2.5".into(),
                    series_uid: "1.2.5.1".into(),
                    sop_instance_uid: "1.2.5.1.1".into(),
                    sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                    transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                    modality: "CT".into(),
                    calling_ae: "T".into(),
                },
            )
            .expect("commit");
        store.promote_stable(0).expect("promote");
        let job = store.claim_job(0).expect("claim").expect("job");
        let results: Vec<ResultObject> = (0..n)
            .map(|i| ResultObject {
                path: PathBuf::from(format!("/r/{i}.dcm")),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.66.4".into(),
                sop_instance_uid: format!("2.25.{}", i + 1),
            })
            .collect();
        let dests: Vec<String> = dests.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            store
                .job_produced(job.job_id, &results, &dests, None)
                .expect("produced"),
            JobState::Delivering
        );
        job.job_id
    }

    #[test]
    fn a_job_is_done_when_every_delivery_is_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let job = job_with_results(&store, 2, &["pacs", "backup"]);
        let due = store.due_deliveries(now_ms()).expect("due");
        assert_eq!(due.len(), 4);
        // A retry later does not make the row due now.
        store
            .delivery_failed(due[0].id, "connection refused", Some(now_ms() + 60_000))
            .expect("failed");
        assert_eq!(store.due_deliveries(now_ms()).expect("due").len(), 3);
        for d in &due {
            store.delivered(d.id).expect("delivered");
        }
        assert_eq!(
            store.job(job).expect("job").expect("exists").state,
            JobState::Done
        );
    }

    #[test]
    fn a_parked_delivery_fails_the_job_with_its_reason_and_retry_resends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let job = job_with_results(&store, 2, &["pacs"]);
        let due = store.due_deliveries(now_ms()).expect("due");
        store.delivered(due[0].id).expect("delivered");
        let reason = "destination accepted no presentation context for Segmentation Storage";
        store
            .delivery_failed(due[1].id, reason, None)
            .expect("parked");
        let j = store.job(job).expect("job").expect("exists");
        assert_eq!(j.state, JobState::Failed);
        assert!(j.reason.as_deref().unwrap_or("").contains(reason), "{j:?}");
        assert!(store.due_deliveries(now_ms()).expect("due").is_empty());
        // Only failed rows can be retried.
        assert!(store.retry_deliveries(Retry::One(due[0].id)).is_err());
        assert_eq!(
            store
                .retry_deliveries(Retry::One(due[1].id))
                .expect("retry"),
            1
        );
        assert_eq!(
            store.job(job).expect("job").expect("exists").state,
            JobState::Delivering
        );
        let again = store.due_deliveries(now_ms()).expect("due");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 0);
        store.delivered(again[0].id).expect("delivered");
        assert_eq!(
            store.job(job).expect("job").expect("exists").state,
            JobState::Done
        );
    }
}

//! Delivery: the outbox's due rows sent with C-STORE, one association per destination and pass,
//! each outcome written back (delivered, retry later with exponential back-off, or parked with
//! the reason in words).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::scu::{self, ScuError, StoreOutcome};
use crate::config::{DeliveryConfig, Destination};
use crate::metrics::Metrics;
use crate::store::{Delivery, Store, StoreError, now_ms};

/// Milliseconds to wait before the next attempt, after `attempts` failed ones (1 or more).
pub fn backoff_ms(attempts: i64, policy: &DeliveryConfig) -> i64 {
    let doublings = (attempts.max(1) - 1).min(30) as u32;
    let s = policy
        .initial_backoff_s
        .saturating_mul(1u64 << doublings)
        .min(policy.max_backoff_s);
    (s as i64).saturating_mul(1000)
}

/// Send every due delivery. Returns how many were attempted.
pub fn deliver_due(
    store: &Store,
    destinations: &[Destination],
    calling_ae: &str,
    policy: &DeliveryConfig,
    metrics: &Metrics,
) -> Result<usize, StoreError> {
    let due = store.due_deliveries(now_ms())?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut by_destination: BTreeMap<String, Vec<Delivery>> = BTreeMap::new();
    for d in due {
        by_destination
            .entry(d.destination.clone())
            .or_default()
            .push(d);
    }
    let mut attempted = 0;
    for (name, rows) in by_destination {
        attempted += rows.len();
        let Some(dest) = destinations.iter().find(|d| d.name == name) else {
            for r in &rows {
                park(
                    store,
                    metrics,
                    r,
                    &format!("destination \"{name}\" is no longer in the configuration"),
                )?;
            }
            continue;
        };
        let target = format!("{}@{}:{}", dest.ae_title, dest.host, dest.port);
        let files: Vec<PathBuf> = rows.iter().map(|r| r.path.clone()).collect();
        let span = tracing::info_span!("deliver", destination = %name);
        let _enter = span.enter();
        match scu::store(
            &target,
            calling_ae,
            &files,
            Duration::from_secs(policy.timeout_s),
        ) {
            Ok(outcomes) => {
                for (r, o) in rows.iter().zip(outcomes) {
                    match o {
                        StoreOutcome::Stored { status } => {
                            store.delivered(r.id)?;
                            Metrics::count(&metrics.delivery_attempts, "delivered");
                            tracing::info!(
                                delivery = r.id,
                                study = %r.study_uid,
                                sop_class = %scu::sop_class_name(&r.sop_class_uid),
                                status = format!("0x{status:04X}"),
                                "delivered"
                            );
                        }
                        StoreOutcome::Failed { reason, permanent } if permanent => {
                            park(store, metrics, r, &reason)?;
                        }
                        StoreOutcome::Failed { reason, .. } => {
                            retry_or_park(store, metrics, r, &reason, policy)?;
                        }
                    }
                }
            }
            Err(ScuError::Associate { message, .. })
                if message.starts_with("destination accepted no presentation context") =>
            {
                for r in &rows {
                    park(store, metrics, r, &message)?;
                }
            }
            Err(e) => {
                let reason = e.to_string();
                for r in &rows {
                    retry_or_park(store, metrics, r, &reason, policy)?;
                }
            }
        }
    }
    Ok(attempted)
}

fn park(store: &Store, metrics: &Metrics, r: &Delivery, reason: &str) -> Result<(), StoreError> {
    tracing::warn!(delivery = r.id, study = %r.study_uid, %reason, "delivery parked as failed");
    Metrics::count(&metrics.delivery_attempts, "parked");
    store.delivery_failed(r.id, reason, None)
}

fn retry_or_park(
    store: &Store,
    metrics: &Metrics,
    r: &Delivery,
    reason: &str,
    policy: &DeliveryConfig,
) -> Result<(), StoreError> {
    let attempts = r.attempts + 1;
    if attempts >= i64::from(policy.max_attempts) {
        return park(
            store,
            metrics,
            r,
            &format!("{reason} (gave up after {attempts} attempts)"),
        );
    }
    let wait = backoff_ms(attempts, policy);
    tracing::warn!(
        delivery = r.id,
        study = %r.study_uid,
        %reason,
        attempt = attempts,
        retry_in_s = wait / 1000,
        "delivery failed; will retry"
    );
    Metrics::count(&metrics.delivery_attempts, "retry");
    store.delivery_failed(r.id, reason, Some(now_ms() + wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_limit() {
        let p = DeliveryConfig {
            max_attempts: 30,
            initial_backoff_s: 5,
            max_backoff_s: 300,
            timeout_s: 1,
        };
        let waits: Vec<i64> = (1..=9).map(|a| backoff_ms(a, &p) / 1000).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff_ms(1000, &p), 300_000);
    }
}

//! The SCP: C-ECHO and C-STORE, one thread per association (dicom-ul), into the store.
//!
//! A C-STORE's data set is streamed, as its fragments arrive, behind a Part 10 header naming the
//! negotiated transfer syntax (so the instance is stored as it was received), into a journal
//! record (`store::journal`), or into a temporary file when there is no room in the journal. A
//! full-size study never sits in memory. Success is answered only after the record is flushed (or
//! the file fsynced and renamed into the spool), the data set parsed and the instance indexed;
//! anything else gets a failure status and a log line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dicom_dictionary_std::{tags, uids};
use dicom_object::FileMetaTableBuilder;
use dicom_ul::Pdu;
use dicom_ul::association::Association;
use dicom_ul::association::server::AccessControl;
use dicom_ul::association::server::ServerAssociationOptions;
use dicom_ul::pdu::{
    AssociationRJServiceUserReason, PDataValue, PDataValueType, PresentationContextResultReason,
    UserIdentity,
};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::admission::{
    Conn, Connections, Deadline, MAX_REJECTING, REJECT_WAIT, Registered, WATCHDOG_TICK, reject,
};
use super::dimse::{self, Command, status};
use super::pdata::{self, Incoming, PduError};
use crate::config::NodeConfig;
use crate::dataset::{Encoding, Malformed};
use crate::iod::transfer_syntax::Syntax;
use crate::iod::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
use crate::metrics::Metrics;
use crate::store::{Committed, InstanceMeta, RecordWriter, Store};

#[derive(Debug, Error)]
pub enum NetError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// SOP classes the node always stores; `[node] extra_sop_classes` adds more.
pub const STORAGE_SOP_CLASSES: [&str; 2] =
    [uids::CT_IMAGE_STORAGE, uids::ENHANCED_CT_IMAGE_STORAGE];

/// Every storage SOP class this node accepts.
fn storage_sop_classes(node: &NodeConfig) -> Vec<String> {
    STORAGE_SOP_CLASSES
        .iter()
        .map(|s| s.to_string())
        .chain(node.extra_sop_classes.iter().cloned())
        .collect()
}

/// Called AE title must be ours; the calling AE title must be on the allowlist when there is one.
struct Access {
    allowed: Vec<String>,
}

impl AccessControl for Access {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.allowed.is_empty()
            && !self
                .allowed
                .iter()
                .any(|a| a.trim() == calling_ae_title.trim())
        {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// Listen and serve until `shutdown` resolves; in-flight associations get `grace` to finish.
pub async fn serve(
    node: NodeConfig,
    store: Arc<Store>,
    stats: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NetError> {
    let addr = format!("{}:{}", node.bind, node.port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| NetError::Bind {
            addr: addr.clone(),
            source,
        })?;
    tracing::info!(%addr, ae_title = %node.ae_title, "listening");
    let node = Arc::new(node);
    let slots = Arc::new(Semaphore::new(node.max_associations as usize));
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
    let per_peer_limit = node.per_peer_limit();
    let mut tasks = tokio::task::JoinSet::new();
    let connections = Arc::new(std::sync::Mutex::new(Connections::default()));
    let mut watchdog = tokio::time::interval(WATCHDOG_TICK);
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = watchdog.tick() => {
                if let Ok(c) = connections.lock() {
                    for conn in c.open.values().filter(|c| c.deadline.passed()) {
                        tracing::warn!(peer = %conn.peer, "peer too slow: association request or PDU not complete in time; connection closed");
                        Metrics::count(&stats.associations, "timed_out");
                        conn.deadline.disarm();
                        conn.socket.shutdown(std::net::Shutdown::Both).ok();
                    }
                }
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let held = connections
                    .lock()
                    .map(|c| c.held_by(peer.ip()))
                    .unwrap_or(usize::MAX);
                let permit = if held >= per_peer_limit as usize {
                    Err(format!("{held} associations from this address already (limit {per_peer_limit})"))
                } else {
                    slots
                        .clone()
                        .try_acquire_owned()
                        .map_err(|_| format!("all {} association slots in use", node.max_associations))
                };
                let permit = match permit {
                    Ok(p) => p,
                    Err(why) => {
                        Metrics::count(&stats.associations, "rejected");
                        match rejecting.clone().try_acquire_owned() {
                            Ok(r) => {
                                tracing::warn!(%peer, %why, "association rejected (A-ASSOCIATE-RJ, local limit exceeded)");
                                tokio::spawn(async move {
                                    let _r = r;
                                    tokio::time::timeout(REJECT_WAIT, reject(stream)).await.ok();
                                });
                            }
                            Err(_) => {
                                tracing::warn!(%peer, %why, "connection closed at once: too many connections being rejected");
                            }
                        }
                        continue;
                    }
                };
                // Each association runs on its own thread, as a blocking loop: receiving, writing
                // the journal, flushing and indexing one after another without handing every
                // instance between the async workers and the blocking pool (that hand-off was
                // 11 % of the node's CPU over four associations; BENCHMARKS.md, "Receiving").
                let stream = match stream
                    .into_std()
                    .and_then(|s| s.set_nonblocking(false).map(|()| s))
                {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "cannot take over the connection");
                        continue;
                    }
                };
                let id = next_id;
                next_id += 1;
                let deadline = Arc::new(Deadline::default());
                deadline.arm(Duration::from_secs(node.artim_timeout_s));
                let registered = match (stream.try_clone(), connections.lock()) {
                    (Ok(clone), Ok(mut c)) => {
                        c.open.insert(id, Conn { socket: clone, peer, deadline: deadline.clone() });
                        Registered { id, all: connections.clone() }
                    }
                    _ => {
                        tracing::warn!(%peer, "cannot watch the connection; closed");
                        continue;
                    }
                };
                let (node, store, stats) = (node.clone(), store.clone(), stats.clone());
                tasks.spawn_blocking(move || {
                    let _permit = permit;
                    let _registered = registered;
                    association(stream, peer, &node, &store, &stats, &deadline);
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tracing::info!(
        in_flight = tasks.len(),
        "shutting down: no new associations"
    );
    let grace = tokio::time::timeout(Duration::from_secs(30), async {
        while tasks.join_next().await.is_some() {}
    });
    if grace.await.is_err() {
        tracing::warn!("associations still open after 30 s; closing their connections");
        // A blocking thread cannot be cancelled: its socket is shut down, its next read fails and
        // it ends as if the peer had gone (its unfinished instance gets no Success).
        if let Ok(c) = connections.lock() {
            for conn in c.open.values() {
                conn.socket.shutdown(std::net::Shutdown::Both).ok();
            }
        }
        while tasks.join_next().await.is_some() {}
    }
    Ok(())
}

/// A C-STORE whose data set is arriving.
struct Pending {
    cmd: Command,
    pc_id: u8,
    transfer_syntax: String,
    sink: Sink,
    /// The data set's fragments as received, while it is no larger than `KEEP_IN_MEMORY`:
    /// parsed from here rather than read back from the disk.
    mem: Option<Vec<Vec<u8>>>,
    bytes: u64,
    failed: Option<(u16, String)>,
}

/// Where a C-STORE's Part 10 file is written while it arrives.
enum Sink {
    /// A journal record, made durable with one flush of preallocated blocks (the usual case).
    Journal(RecordWriter),
    /// A temporary file synced on its own and renamed into the spool: no journal, no free
    /// segment, a deflated or a large instance.
    File {
        tmp: PathBuf,
        file: std::io::BufWriter<std::fs::File>,
        /// Bytes whose writeback to the disk was started (`start_writeback`).
        synced_to: u64,
    },
    /// Nothing could be opened, or the request is refused: the data set is received and dropped.
    Discard,
}

/// Writeback is started every this many bytes.
const WRITEBACK_CHUNK: u64 = 128 << 10;

/// Start writing what has been received to the disk while the rest arrives (Linux
/// `sync_file_range`, which does not wait), so that the `fdatasync` before Success finds most of
/// the instance already on the disk. Only an optimisation: durability still comes from that
/// `fdatasync`.
fn start_writeback(
    f: &mut std::io::BufWriter<std::fs::File>,
    synced_to: &mut u64,
    received: u64,
) -> std::io::Result<()> {
    if received - *synced_to < WRITEBACK_CHUNK {
        return Ok(());
    }
    f.flush()?;
    crate::store::start_writeback(f.get_ref(), 0, 0);
    *synced_to = received;
    Ok(())
}

impl Sink {
    /// A temporary file, with `head` (what was written so far) in it.
    fn file(
        store: &Store,
        head: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<Sink, String> {
        let (tmp, file) = store.temp_file().map_err(|e| e.to_string())?;
        // A small buffer: the page-cache writes go on while the next fragments arrive.
        let mut file = std::io::BufWriter::with_capacity(64 << 10, file);
        if let Err(e) = head(&mut file) {
            std::fs::remove_file(&tmp).ok();
            return Err(format!("cannot write to the spool: {e}"));
        }
        Ok(Sink::File {
            tmp,
            file,
            synced_to: 0,
        })
    }

    fn write(&mut self, store: &Store, data: &[u8], received: u64) -> Result<(), String> {
        if let Sink::Journal(w) = self
            && (!w.fits(data.len()) || received > KEEP_IN_MEMORY)
        {
            // Outgrows its segment, or too large to parse from memory: continue in a file.
            let Sink::Journal(w) = std::mem::replace(self, Sink::Discard) else {
                return Ok(());
            };
            *self = Sink::file(store, |out| w.spill(out))?;
        }
        match self {
            Sink::Journal(w) => w
                .write(data)
                .map_err(|e| format!("cannot write to the journal: {e}")),
            Sink::File {
                file, synced_to, ..
            } => file
                .write_all(data)
                .and_then(|()| start_writeback(file, synced_to, received))
                .map_err(|e| format!("cannot write to the spool: {e}")),
            Sink::Discard => Ok(()),
        }
    }

    fn temp_path(&self) -> Option<&PathBuf> {
        match self {
            Sink::File { tmp, .. } => Some(tmp),
            _ => None,
        }
    }
}

/// A command set longer than this (a few UIDs and numbers) aborts the association.
const MAX_COMMAND_BYTES: usize = 64 << 10;

/// Data sets up to this size are also kept in memory until they are answered (a CT slice is
/// about 0.5 MB; an Enhanced CT of hundreds of MB is parsed from its file instead).
const KEEP_IN_MEMORY: u64 = 16 << 20;

fn association(
    stream: std::net::TcpStream,
    peer: SocketAddr,
    node: &NodeConfig,
    store: &Store,
    stats: &Metrics,
    deadline: &Deadline,
) {
    stream.set_nodelay(true).ok();
    // A peer that reads nothing cannot hold a response's write forever either.
    stream
        .set_write_timeout(Some(Duration::from_secs(node.dimse_timeout_s)))
        .ok();
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(Access {
            allowed: node.allowed_calling_aes.clone(),
        })
        .ae_title(node.ae_title.as_str())
        .max_pdu_length(node.max_pdu_length)
        // The ARTIM timer: how long the association request may take to arrive.
        .read_timeout(Duration::from_secs(node.artim_timeout_s))
        .with_abstract_syntax(uids::VERIFICATION);
    let accepted = storage_sop_classes(node);
    for sop in &accepted {
        options = options.with_abstract_syntax(sop.as_str());
    }
    for ts in Syntax::ALL {
        options = options.with_transfer_syntax(ts.uid());
    }
    let mut assoc = match options.establish(stream) {
        Ok(a) => a,
        Err(e) => {
            Metrics::count(&stats.associations, "rejected");
            // A timeout here is the ARTIM timer running out before the request came.
            tracing::warn!(%peer, error = %e, "association refused");
            return;
        }
    };
    if let Err(e) = assoc
        .inner_stream()
        .set_read_timeout(Some(Duration::from_secs(node.dimse_timeout_s)))
    {
        tracing::warn!(%peer, error = %e, "cannot set the DIMSE timeout; aborting");
        let _ = assoc.abort();
        return;
    }
    Metrics::count(&stats.associations, "accepted");
    let calling = assoc.peer_ae_title().trim().to_string();
    tracing::info!(%peer, calling_ae = %calling, "association accepted");
    let contexts: Vec<(u8, String, String)> = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| {
            (
                pc.id,
                pc.abstract_syntax.clone(),
                pc.transfer_syntax.clone(),
            )
        })
        .collect();
    let mut command = Vec::new();
    let mut pending: Option<Pending> = None;
    let max_instance = node.max_instance_mib << 20;
    let pdu_within = Duration::from_secs(node.dimse_timeout_s);
    loop {
        deadline.arm(pdu_within);
        let read = pdata::read_pdu(assoc.inner_stream(), node.max_pdu_length);
        deadline.disarm();
        let pdu = match read {
            Ok(Incoming::PData(data)) => Pdu::PData { data },
            Ok(Incoming::Other(p)) => p,
            Err(PduError::Io(e)) => {
                tracing::warn!(%peer, error = %e, "association ended abnormally");
                break;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "protocol error; aborting");
                let _ = assoc.abort();
                // On to the clean-up below: a data set cut off here leaves no temporary file.
                break;
            }
        };
        match pdu {
            Pdu::PData { data } => {
                for mut v in data {
                    match v.value_type {
                        PDataValueType::Command => {
                            command.extend_from_slice(&v.data);
                            if command.len() > MAX_COMMAND_BYTES {
                                tracing::warn!(%peer, bytes = command.len(), "command set over 64 KiB; aborting");
                                let _ = assoc.abort();
                                return;
                            }
                            if !v.is_last {
                                continue;
                            }
                            let bytes = std::mem::take(&mut command);
                            let cmd = match Command::decode(&bytes) {
                                Ok(c) => c,
                                Err(e) => {
                                    tracing::warn!(%peer, error = %e, "malformed command set; aborting");
                                    let _ = assoc.abort();
                                    return;
                                }
                            };
                            match cmd.field {
                                dimse::C_ECHO_RQ => {
                                    let rsp = cmd.response(dimse::C_ECHO_RSP, status::SUCCESS);
                                    if send(&mut assoc, v.presentation_context_id, &rsp).is_err() {
                                        return;
                                    }
                                }
                                dimse::C_STORE_RQ if cmd.has_data_set() => {
                                    let Some((_, _, ts)) =
                                        contexts.iter().find(|c| c.0 == v.presentation_context_id)
                                    else {
                                        let _ = assoc.abort();
                                        return;
                                    };
                                    pending = Some(begin_store(
                                        store,
                                        &accepted,
                                        cmd,
                                        v.presentation_context_id,
                                        ts,
                                    ));
                                }
                                other => {
                                    tracing::warn!(%peer, command = other, "unsupported command");
                                    let rsp = cmd.response(other | 0x8000, 0x0211);
                                    if send(&mut assoc, v.presentation_context_id, &rsp).is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                        PDataValueType::Data => {
                            let Some(p) = pending.as_mut() else {
                                tracing::warn!(%peer, "data set without a C-STORE request; aborting");
                                let _ = assoc.abort();
                                return;
                            };
                            p.bytes += v.data.len() as u64;
                            stats.bytes_received.inc_by(v.data.len() as u64);
                            if p.failed.is_none() && p.bytes > max_instance {
                                // Received to its end and dropped, then refused.
                                if let Some(tmp) = p.sink.temp_path() {
                                    std::fs::remove_file(tmp).ok();
                                }
                                p.sink = Sink::Discard;
                                p.mem = None;
                                p.failed = Some((
                                    status::OUT_OF_RESOURCES,
                                    format!(
                                        "the instance is larger than the {} MiB limit ([node] max_instance_mib)",
                                        node.max_instance_mib
                                    ),
                                ));
                            }
                            if p.failed.is_none()
                                && let Err(e) = p.sink.write(store, &v.data, p.bytes)
                            {
                                p.sink = Sink::Discard;
                                p.failed = Some((status::OUT_OF_RESOURCES, e));
                            }
                            if p.bytes > KEEP_IN_MEMORY || p.failed.is_some() {
                                p.mem = None;
                            } else if let Some(m) = p.mem.as_mut() {
                                // Kept as received, not copied into one buffer.
                                m.push(std::mem::take(&mut v.data));
                            }
                            if v.is_last {
                                let Some(p) = pending.take() else { continue };
                                let (pc, cmd) = (p.pc_id, p.cmd.clone());
                                let durable = if matches!(p.sink, Sink::Journal(_)) {
                                    "journal"
                                } else {
                                    "file"
                                };
                                let outcome = finish_store(store, p, &calling, max_instance);
                                let rsp = match outcome {
                                    Ok(Committed::Stored(_)) => {
                                        Metrics::count(&stats.instances, "stored");
                                        Metrics::count(&stats.instances_durable, durable);
                                        cmd.response(dimse::C_STORE_RSP, status::SUCCESS)
                                    }
                                    Ok(Committed::Duplicate(_)) => {
                                        Metrics::count(&stats.instances, "duplicate");
                                        cmd.response(dimse::C_STORE_RSP, status::SUCCESS)
                                    }
                                    Err((code, reason)) => {
                                        Metrics::count(&stats.instances, "failed");
                                        tracing::warn!(%peer, sop = ?cmd.affected_sop_instance_uid, status = code, %reason, "C-STORE failed");
                                        let mut r = cmd.response(dimse::C_STORE_RSP, code);
                                        r.error_comment = Some(reason);
                                        r
                                    }
                                };
                                if send(&mut assoc, pc, &rsp).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            }
            Pdu::ReleaseRQ => {
                let _ = assoc.send(&Pdu::ReleaseRP);
                tracing::info!(%peer, "association released");
                break;
            }
            Pdu::AbortRQ { .. } => {
                tracing::info!(%peer, "association aborted by the peer");
                break;
            }
            other => {
                tracing::warn!(%peer, pdu = %other.short_description(), "unexpected PDU; aborting");
                let _ = assoc.abort();
                break;
            }
        }
    }
    if let Some(tmp) = pending.as_ref().and_then(|p| p.sink.temp_path()) {
        std::fs::remove_file(tmp).ok();
    }
}

fn send(
    assoc: &mut dicom_ul::association::ServerAssociation<std::net::TcpStream>,
    pc_id: u8,
    cmd: &Command,
) -> Result<(), ()> {
    let pdu = Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc_id,
            value_type: PDataValueType::Command,
            is_last: true,
            data: cmd.encode(),
        }],
    };
    assoc.send(&pdu).map_err(|e| {
        tracing::warn!(error = %e, "cannot send a response");
    })
}

/// Open the journal record (or temporary file) of a C-STORE and write its Part 10 header.
fn begin_store(store: &Store, accepted: &[String], cmd: Command, pc_id: u8, ts: &str) -> Pending {
    let sop_class = cmd.affected_sop_class_uid.clone().unwrap_or_default();
    let sop = cmd.affected_sop_instance_uid.clone().unwrap_or_default();
    let refuse = |code, reason: String| Pending {
        cmd: cmd.clone(),
        pc_id,
        transfer_syntax: ts.to_string(),
        sink: Sink::Discard,
        mem: None,
        bytes: 0,
        failed: Some((code, reason)),
    };
    if !accepted.contains(&sop_class) {
        return refuse(
            status::SOP_CLASS_NOT_SUPPORTED,
            format!("SOP class {sop_class} is not stored here"),
        );
    }
    if !crate::iod::uid::is_valid(&sop) {
        return refuse(
            status::CANNOT_UNDERSTAND,
            "AffectedSOPInstanceUID is not a valid UID".into(),
        );
    }
    let head = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class.as_str())
        .media_storage_sop_instance_uid(sop.as_str())
        .transfer_syntax(ts)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .build()
        .map_err(|e| e.to_string())
        .and_then(|meta| {
            let mut head = vec![0u8; 128];
            head.extend_from_slice(b"DICM");
            meta.write(&mut head).map_err(|e| e.to_string())?;
            Ok(head)
        });
    let head = match head {
        Ok(h) => h,
        Err(e) => {
            return refuse(
                status::OUT_OF_RESOURCES,
                format!("cannot write the file header: {e}"),
            );
        }
    };
    // A deflated data set is parsed from its file (the reader inflates it): not journaled.
    let journaled = (ts != uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
        .then(|| store.journal().and_then(|j| j.begin()))
        .flatten()
        .and_then(|mut w| w.write(&head).is_ok().then_some(w));
    let sink = match journaled {
        Some(w) => Ok(Sink::Journal(w)),
        None => Sink::file(store, |out| out.write_all(&head)),
    };
    match sink {
        Ok(sink) => Pending {
            cmd,
            pc_id,
            transfer_syntax: ts.to_string(),
            sink,
            mem: Some(Vec::new()),
            bytes: 0,
            failed: None,
        },
        // The data set is still received (and dropped); the failure is answered at its end.
        Err(e) => refuse(status::OUT_OF_RESOURCES, e),
    }
}

/// Make the instance durable, check it can be read, index it.
fn finish_store(
    store: &Store,
    p: Pending,
    calling: &str,
    max_instance_bytes: u64,
) -> Result<Committed, (u16, String)> {
    let Pending {
        sink,
        mem,
        failed,
        cmd,
        transfer_syntax,
        ..
    } = p;
    let tmp = sink.temp_path().cloned();
    let discard = |e: (u16, String)| {
        if let Some(t) = &tmp {
            std::fs::remove_file(t).ok();
        }
        Err(e)
    };
    if let Some(f) = failed {
        return discard(f);
    }
    let sop = cmd.affected_sop_instance_uid.clone().unwrap_or_default();
    let meta = |ids: Identifiers| -> Result<InstanceMeta, (u16, String)> {
        if ids.sop_instance_uid != sop {
            return Err((
                status::DATA_SET_DOES_NOT_MATCH,
                "SOPInstanceUID of the data set differs from the C-STORE request".into(),
            ));
        }
        Ok(InstanceMeta {
            study_uid: ids.study_uid,
            series_uid: ids.series_uid,
            sop_instance_uid: sop.clone(),
            sop_class_uid: cmd.affected_sop_class_uid.clone().unwrap_or_default(),
            transfer_syntax_uid: transfer_syntax.clone(),
            modality: ids.modality,
            calling_ae: calling.to_string(),
        })
    };
    let unparsable = |e: String| {
        (
            status::CANNOT_UNDERSTAND,
            format!("the data set cannot be parsed: {e}"),
        )
    };
    let malformed = |e: Malformed| {
        let code = match e {
            Malformed::TooLarge { .. } => status::OUT_OF_RESOURCES,
            _ => status::CANNOT_UNDERSTAND,
        };
        (code, format!("malformed data set: {e}"))
    };
    let store_error = |e: crate::store::StoreError| {
        let code = match e {
            crate::store::StoreError::BadUid { .. } => status::CANNOT_UNDERSTAND,
            _ => status::OUT_OF_RESOURCES,
        };
        (code, e.to_string())
    };
    match sink {
        Sink::Discard => discard((status::OUT_OF_RESOURCES, "no spool file".into())),
        Sink::Journal(mut writer) => {
            let Some(bytes) = mem.as_deref() else {
                return Err((status::OUT_OF_RESOURCES, "data set not kept".into()));
            };
            // Checked and parsed whole before the record's trailer is written: a record is
            // valid for replay only once nothing is left that could refuse its instance but
            // the index (issue 38: a data set that crashed the parse after its trailer was
            // written came back at the next start over an acknowledged instance).
            check_fragments(bytes, &transfer_syntax, max_instance_bytes).map_err(malformed)?;
            let meta = meta(parse_in_memory(bytes, &transfer_syntax).map_err(unparsable)?)?;
            writer.finish_payload(&meta).map_err(|e| {
                (
                    status::OUT_OF_RESOURCES,
                    format!("cannot write to the journal: {e}"),
                )
            })?;
            store.commit_journaled(writer, &meta).map_err(store_error)
        }
        Sink::File {
            tmp: tmp_path,
            file,
            ..
        } => {
            let file = match file.into_inner() {
                Ok(f) => f,
                Err(e) => {
                    return discard((
                        status::OUT_OF_RESOURCES,
                        format!("cannot write to the spool: {e}"),
                    ));
                }
            };
            // Parsed while the file is synced.
            let (synced, parsed) = std::thread::scope(|s| {
                let sync = s.spawn(|| file.sync_data());
                let parsed = match mem.as_deref() {
                    Some(bytes) if transfer_syntax != uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => {
                        check_fragments(bytes, &transfer_syntax, max_instance_bytes)
                            .map_err(malformed)
                            .and_then(|()| {
                                parse_in_memory(bytes, &transfer_syntax).map_err(unparsable)
                            })
                    }
                    _ => crate::dataset::check_file(&tmp_path, max_instance_bytes)
                        .map_err(malformed)
                        .and_then(|_| parse_file(&tmp_path).map_err(unparsable)),
                };
                (sync.join(), parsed)
            });
            match synced {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return discard((
                        status::OUT_OF_RESOURCES,
                        format!("cannot write to the spool: {e}"),
                    ));
                }
                Err(_) => return discard((status::OUT_OF_RESOURCES, "spool sync failed".into())),
            }
            let meta = match parsed.and_then(meta) {
                Ok(m) => m,
                Err(e) => return discard(e),
            };
            store
                .commit(&tmp_path, &meta)
                .or_else(|e| discard(store_error(e)))
        }
    }
}

/// What the index needs from a received data set.
#[derive(Debug, Default, PartialEq)]
struct Identifiers {
    study_uid: String,
    series_uid: String,
    sop_instance_uid: String,
    modality: String,
}

fn known_transfer_syntax(
    uid: &str,
) -> Result<&'static dicom_encoding::transfer_syntax::TransferSyntax, String> {
    use dicom_encoding::TransferSyntaxIndex;
    dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(uid)
        .ok_or_else(|| format!("unknown transfer syntax {uid}"))
}

/// Parse a whole data set received in `transfer_syntax` (not deflated).
fn parse_in_memory(fragments: &[Vec<u8>], transfer_syntax: &str) -> Result<Identifiers, String> {
    let ts = known_transfer_syntax(transfer_syntax)?;
    let obj = dicom_object::InMemDicomObject::read_dataset_with_ts(Fragments::new(fragments), ts)
        .map_err(|e| e.to_string())?;
    Ok(identifiers(&obj))
}

/// A data set received in fragments, checked for structure (`crate::dataset`) before anything
/// parses it.
fn check_fragments(
    fragments: &[Vec<u8>],
    transfer_syntax: &str,
    max_instance_bytes: u64,
) -> Result<(), Malformed> {
    let total: u64 = fragments.iter().map(|f| f.len() as u64).sum();
    if total > max_instance_bytes {
        return Err(Malformed::TooLarge {
            max: max_instance_bytes,
        });
    }
    crate::dataset::check(
        Fragments::new(fragments),
        total,
        Encoding::of(transfer_syntax)?,
    )
}

/// Fragments read as one stream, without joining them (hand-written: std chains two readers only).
struct Fragments<'a> {
    rest: std::slice::Iter<'a, Vec<u8>>,
    current: &'a [u8],
}

impl<'a> Fragments<'a> {
    fn new(fragments: &'a [Vec<u8>]) -> Self {
        Fragments {
            rest: fragments.iter(),
            current: &[],
        }
    }
}

impl std::io::Read for Fragments<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rest.next() {
                Some(next) => self.current = next,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current[..n]);
        self.current = &self.current[n..];
        Ok(n)
    }
}

/// Parse a Part 10 file (inflating a deflated one) up to its pixel data, which
/// `crate::dataset::check_file` has already walked: an instance too large to be kept in memory is
/// not read into it here either.
fn parse_file(file: &std::path::Path) -> Result<Identifiers, String> {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(file)
        .map_err(|e| e.to_string())?;
    Ok(identifiers(&obj))
}

fn identifiers(obj: &dicom_object::InMemDicomObject) -> Identifiers {
    let text = |tag| crate::store::spool::text_of(obj, tag);
    Identifiers {
        study_uid: text(tags::STUDY_INSTANCE_UID),
        series_uid: text(tags::SERIES_INSTANCE_UID),
        sop_instance_uid: text(tags::SOP_INSTANCE_UID),
        modality: text(tags::MODALITY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_encoding::TransferSyntaxIndex;
    use dicom_object::InMemDicomObject;
    use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

    #[test]
    fn fragments_are_checked_and_parsed_as_one_stream() {
        let text = |tag, vr, s: &str| DataElement::new(tag, vr, PrimitiveValue::from(s));
        // A sequence before Series Instance UID whose item holds one of its own, and an element
        // after it (read at the top level, it would end the reading there).
        let item = InMemDicomObject::from_element_iter([
            text(tags::SERIES_INSTANCE_UID, VR::UI, "9.9.9"),
            text(tags::INSTANCE_NUMBER, VR::IS, "5"),
        ]);
        let obj = InMemDicomObject::from_element_iter([
            text(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.1"),
            text(tags::MODALITY, VR::CS, "CT"),
            DataElement::new(
                tags::REFERENCED_SERIES_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![item]),
            ),
            text(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3"),
            text(tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.4"),
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U8(vec![7u8; 64].into()),
            ),
        ]);
        let want = Identifiers {
            study_uid: "1.2.3".into(),
            series_uid: "1.2.3.4".into(),
            sop_instance_uid: "1.2.3.1".into(),
            modality: "CT".into(),
        };
        for ts_uid in [
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            uids::IMPLICIT_VR_LITTLE_ENDIAN,
        ] {
            let ts = TransferSyntaxRegistry.get(ts_uid).expect("known");
            let mut bytes = Vec::new();
            obj.write_dataset_with_ts(&mut bytes, ts).expect("write");
            // Split at odd places, as PDVs may be.
            let fragments: Vec<Vec<u8>> = bytes.chunks(7).map(<[u8]>::to_vec).collect();
            check_fragments(&fragments, ts_uid, 1 << 20).expect("well formed");
            assert_eq!(parse_in_memory(&fragments, ts_uid).expect("parse"), want);
            assert!(matches!(
                check_fragments(&fragments, ts_uid, bytes.len() as u64 - 1),
                Err(Malformed::TooLarge { .. })
            ));
            // A stray byte after the pixel data: refused, where dicom-rs reads it as the end.
            let mut stray = fragments.clone();
            stray.push(vec![0]);
            assert!(parse_in_memory(&stray, ts_uid).is_ok());
            assert!(matches!(
                check_fragments(&stray, ts_uid, 1 << 20),
                Err(Malformed::Trailing { left: 1, .. })
            ));
        }
    }
}

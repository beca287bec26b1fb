//! The journal: received instances made durable in preallocated segment files before Success,
//! then written to their spool files in the background.
//!
//! Why: making a *new* file durable costs an ext4 journal commit (its block allocation), about
//! 1 ms on this class of disk, paid once per instance because a sender waits for each response
//! (BENCHMARKS.md, "Receiving"). Overwriting blocks that are already allocated and written needs
//! only the data and a cache flush. So a C-STORE appends one record to a segment that was filled
//! with zeros when it was created, `fdatasync`s it and is answered; the materialiser thread copies
//! records to `spool/<study>/<series>/<sop>.dcm` in batches, makes the batch durable with one
//! `syncfs`, and only then lets the segment be reused. A study's job waits until every instance
//! of it is in its spool file (`instances.materialised`).
//!
//! The format is pulmo's own (no crate does this). Every segment and record starts on a 4 KiB
//! boundary (`SLOT`):
//! - segment header, slot 0: "PULMOSEG", version u32 (1), generation u64, CRC-32 of those bytes;
//! - record (version 2): a start slot — "PULMOREC", version u32 (2), generation u64, nonce u64
//!   (random, never sent anywhere), CRC-32 of those — then the payload (the Part 10 file as it is
//!   stored), then at the next boundary a trailer slot — "PULMOEND", version u32, generation u64,
//!   nonce u64, the record's start u64, payload length u64, payload CRC-32 u32, metadata length
//!   u32, the metadata (JSON of `InstanceMeta`), CRC-32 of all of that — and the next record
//!   after it. All integers little endian. A record refused after its trailer was written (a
//!   duplicate, a data set that does not parse, an instance the index refused) is voided: its
//!   trailer rewritten with the magic "PULMOVOD", skipped by recovery, which goes on after it.
//! - record (version 1, written before 2026-12 and still read): one header slot with the
//!   trailer's fields but nonce and start (magic, version 1, generation, length, payload CRC,
//!   metadata) written after the payload, then the payload.
//!
//! Why a trailer: it is written right after the payload's last bytes and goes to the disk with
//! them as one request while the data set is parsed, so the flush before Success has nothing
//! else to wait for; a header at the record's start rewritten at the end was a second request
//! (BENCHMARKS.md, "Receiving"). The start slot goes out with the payload's first bytes.
//!
//! A record is valid when its start slot is (magic, generation the segment's current one, CRC)
//! and the first slot after it that is a valid trailer with the same generation, nonce and start
//! lies right after a payload of its length whose CRC holds; the sender cannot forge such a
//! trailer inside its data, not knowing the nonce. A segment is read from its start up to the
//! first record that is not valid. Both are flushed by the one `fdatasync` before Success, so a
//! record that was acknowledged is valid after any crash, and one that was not is at worst valid
//! too (it is then stored, and the sender's retry is a duplicate). Reusing a segment gives it a
//! new generation, which invalidates all its old records with one write.
//!
//! Recovery, at every start before anything reads the spool (`recover`): every valid record is
//! written to its spool file again and indexed if the index lacks it, the spool is made durable,
//! then every segment starts a new generation.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

use super::spool::{self, Committed, InstanceMeta};
use super::{Store, StoreError, io};

pub(super) const DIR: &str = "journal";
const SLOT: u64 = 4096;
const SEGMENT_MAGIC: &[u8; 8] = b"PULMOSEG";
const RECORD_MAGIC: &[u8; 8] = b"PULMOREC";
const VOID_MAGIC: &[u8; 8] = b"PULMOVOD";
/// Segment header version; also the record format written before 2026-12 (header after the
/// payload, at the record's start), which recovery still reads.
const VERSION: u32 = 1;
/// The record format written now: a start header before the payload, a trailer after it.
const RECORD_V2: u32 = 2;
const TRAILER_MAGIC: &[u8; 8] = b"PULMOEND";
/// Fixed part of a version 1 record header before the metadata: magic, version, generation,
/// length, payload CRC, metadata length.
const RECORD_FIXED: usize = 8 + 4 + 8 + 8 + 4 + 4;
/// A version 2 start header: magic, version, generation, nonce, CRC-32 of those.
const START_LEN: usize = 8 + 4 + 8 + 8 + 4;
/// Fixed part of a trailer before the metadata: magic, version, generation, nonce, the record's
/// start, payload length, payload CRC, metadata length.
const TRAILER_FIXED: usize = 8 + 4 + 8 + 8 + 8 + 8 + 4 + 4;
/// Payload length, payload CRC and metadata length: the end of both fixed parts.
const LENGTHS: usize = 8 + 4 + 4;
/// A segment with less room than this takes no new record.
const MIN_ROOM: u64 = 1 << 20;
/// Records are written out to the spool once none has arrived for this long: writing them while
/// a study arrives would compete with receiving it for the disk and the CPU (on 2 cores it made
/// receiving 1.5 times slower)...
const IDLE: Duration = Duration::from_millis(300);
/// ...or at once when less than this share of the journal is left.
const PRESSURE: f64 = 0.25;
/// Payload is written to the segment as it arrives, small fragments gathered up to this size...
const GATHER: usize = 16 << 10;
/// ...and its writeback to the disk started every this many bytes, so that the `fdatasync`
/// before Success finds most of it on the disk already.
const WRITEBACK_CHUNK: u64 = 256 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalConfig {
    /// Most segment files; 0 turns the journal off.
    pub max_segments: usize,
    pub segment_bytes: u64,
}

struct Segment {
    path: PathBuf,
    file: Arc<File>,
    generation: u64,
    /// Where the next record goes.
    append_at: u64,
    /// The file's size.
    end: u64,
    /// Records not yet durable in their spool files: the segment cannot be reused before 0.
    live: usize,
    leased: bool,
}

struct Pool {
    segments: Vec<Segment>,
    next_generation: u64,
    growing: bool,
    /// When making a segment last failed (a full disk): not tried again for `GROW_RETRY`.
    grow_failed: Option<Instant>,
}

const GROW_RETRY: Duration = Duration::from_secs(60);

enum Msg {
    Record(Pending),
    Grow,
    /// Write out everything waiting, then answer.
    Drain(mpsc::Sender<()>),
}

/// A sealed record waiting for its spool file.
struct Pending {
    segment: usize,
    payload_at: u64,
    len: u64,
    path: PathBuf,
    sop_instance_uid: String,
}

pub struct Journal {
    root: PathBuf,
    config: JournalConfig,
    pool: Mutex<Pool>,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Tests only: records stay in the journal, as if the process had died before writing them.
    paused: AtomicBool,
}

/// A record being written by one C-STORE. It holds its segment until it is sealed or dropped;
/// dropped unsealed, it leaves the segment as it was.
pub struct RecordWriter {
    journal: Arc<Journal>,
    segment: usize,
    file: Arc<File>,
    generation: u64,
    /// Written into the start header and the trailer: ties them together (random, never sent).
    nonce: u64,
    start: u64,
    end: u64,
    len: u64,
    written: u64,
    writeback_from: u64,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    /// The trailer is written (`finish_payload`); its voided form, to undo it.
    void_trailer: Option<Vec<u8>>,
    released: bool,
}

/// A record that is durable in the journal.
pub struct Sealed {
    journal: Arc<Journal>,
    segment: usize,
    file: Arc<File>,
    start: u64,
    len: u64,
    /// Its trailer as `retract` rewrites it.
    void_trailer: Vec<u8>,
}

fn segment_path(root: &Path, i: usize) -> PathBuf {
    root.join(DIR).join(format!("segment-{i:03}.wal"))
}

fn align(n: u64) -> u64 {
    n.div_ceil(SLOT) * SLOT
}

fn segment_header(generation: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(SEGMENT_MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

fn parse_segment_header(b: &[u8]) -> Option<u64> {
    if b.len() < 24 || &b[..8] != SEGMENT_MAGIC || b[8..12] != VERSION.to_le_bytes() {
        return None;
    }
    let crc = u32::from_le_bytes(b[20..24].try_into().ok()?);
    let generation = u64::from_le_bytes(b[12..20].try_into().ok()?);
    (crc32fast::hash(&b[..20]) == crc).then_some(generation)
}

/// A version 1 record header (tests: recovery still reads them).
#[cfg(test)]
fn record_header(
    magic: &[u8; 8],
    generation: u64,
    len: u64,
    payload_crc: u32,
    meta: &[u8],
) -> Vec<u8> {
    let mut h = Vec::with_capacity(RECORD_FIXED + meta.len() + 4);
    h.extend_from_slice(magic);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&generation.to_le_bytes());
    push_record_fields(&mut h, len, payload_crc, meta);
    h
}

/// A valid record header of `generation`, voided or not.
struct RecordHeader {
    len: u64,
    payload_crc: u32,
    meta: InstanceMeta,
    void: bool,
}

fn parse_record_header(b: &[u8], generation: u64) -> Option<RecordHeader> {
    let magic = b.get(..8)?;
    let void = magic == VOID_MAGIC;
    if (magic != RECORD_MAGIC && !void) || le_u32(b, 8)? != VERSION || le_u64(b, 12)? != generation
    {
        return None;
    }
    parse_record_fields(b, RECORD_FIXED - LENGTHS, void)
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)?.try_into().ok().map(u32::from_le_bytes)
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)?.try_into().ok().map(u64::from_le_bytes)
}

/// The fields a version 1 header and a trailer end with: payload length, payload CRC,
/// metadata length, metadata, and the CRC-32 of all that precedes it.
fn push_record_fields(h: &mut Vec<u8>, len: u64, payload_crc: u32, meta: &[u8]) {
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(&payload_crc.to_le_bytes());
    h.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    h.extend_from_slice(meta);
    let crc = crc32fast::hash(h);
    h.extend_from_slice(&crc.to_le_bytes());
}

/// `push_record_fields`' fields, starting at `len_at`, read back and checked.
fn parse_record_fields(b: &[u8], len_at: usize, void: bool) -> Option<RecordHeader> {
    let len = le_u64(b, len_at)?;
    let payload_crc = le_u32(b, len_at + 8)?;
    let meta_at = len_at + 16;
    let end = meta_at.checked_add(le_u32(b, len_at + 12)? as usize)?;
    if crc32fast::hash(b.get(..end)?) != le_u32(b, end)? {
        return None;
    }
    let meta = serde_json::from_slice(&b[meta_at..end]).ok()?;
    Some(RecordHeader {
        len,
        payload_crc,
        meta,
        void,
    })
}

fn start_header(generation: u64, nonce: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(START_LEN);
    h.extend_from_slice(RECORD_MAGIC);
    h.extend_from_slice(&RECORD_V2.to_le_bytes());
    h.extend_from_slice(&generation.to_le_bytes());
    h.extend_from_slice(&nonce.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// The version 2 start header's nonce, if `b` is a valid one of `generation`.
fn parse_start_header(b: &[u8], generation: u64) -> Option<u64> {
    let b = b.get(..START_LEN)?;
    if &b[..8] != RECORD_MAGIC
        || b[8..12] != RECORD_V2.to_le_bytes()
        || b[12..20] != generation.to_le_bytes()
        || crc32fast::hash(&b[..28]).to_le_bytes() != b[28..32]
    {
        return None;
    }
    Some(u64::from_le_bytes(b[20..28].try_into().ok()?))
}

/// Where a record is, to make its trailer.
#[derive(Clone, Copy)]
struct RecordAt {
    generation: u64,
    nonce: u64,
    start: u64,
}

fn trailer(magic: &[u8; 8], at: RecordAt, len: u64, payload_crc: u32, meta: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(TRAILER_FIXED + meta.len() + 4);
    h.extend_from_slice(magic);
    h.extend_from_slice(&RECORD_V2.to_le_bytes());
    h.extend_from_slice(&at.generation.to_le_bytes());
    h.extend_from_slice(&at.nonce.to_le_bytes());
    h.extend_from_slice(&at.start.to_le_bytes());
    push_record_fields(&mut h, len, payload_crc, meta);
    h
}

/// A valid trailer of the record `at`, voided or not (the same fields as a version 1 header).
fn parse_trailer(b: &[u8], at: RecordAt) -> Option<RecordHeader> {
    let magic = b.get(..8)?;
    let void = magic == VOID_MAGIC;
    if (magic != TRAILER_MAGIC && !void)
        || le_u32(b, 8)? != RECORD_V2
        || le_u64(b, 12)? != at.generation
        || le_u64(b, 20)? != at.nonce
        || le_u64(b, 28)? != at.start
    {
        return None;
    }
    parse_record_fields(b, TRAILER_FIXED - LENGTHS, void)
}

/// Write `generation`'s header at the start of a segment and make it durable.
fn start_generation(file: &File, generation: u64) -> std::io::Result<()> {
    file.write_all_at(&segment_header(generation), 0)?;
    file.sync_data()
}

/// Make everything written on the store's file system durable (one journal commit for a whole
/// batch of new files, their folders and the index's WAL).
fn sync_file_system(root: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = File::open(root)?;
    // SAFETY: a valid open file descriptor.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Copy `len` bytes at `offset` of `src` to a new file at `path` (in the kernel where it can),
/// which appears complete or not at all (a reader never sees part of it).
fn copy_out(src: &File, offset: u64, len: u64, path: &Path) -> std::io::Result<()> {
    let part = path.with_extension("dcm.part");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let copied = copy_range(src, offset, len, &File::create(&part)?);
    match copied.and_then(|()| std::fs::rename(&part, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            std::fs::remove_file(&part).ok();
            Err(e)
        }
    }
}

fn copy_range(src: &File, offset: u64, len: u64, dst: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut off_in = offset as libc::loff_t;
    let mut left = len;
    while left > 0 {
        // SAFETY: valid descriptors; the kernel advances `off_in`, the destination's own offset.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                left as usize,
                0,
            )
        };
        if n <= 0 {
            break;
        }
        left -= n as u64;
    }
    if left > 0 {
        // No copy_file_range here (or it stopped early): read and write what is left.
        let mut w = std::io::BufWriter::new(dst);
        copy_to(src, offset + (len - left), left, &mut w)?;
        w.flush()?;
    }
    Ok(())
}

/// Copy `len` bytes at `offset` of `src` into `out`, a piece at a time.
fn copy_to(src: &File, offset: u64, len: u64, out: &mut dyn Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; len.min(1 << 20) as usize];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], offset + at)?;
        out.write_all(&buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

/// Whether the file at `path` holds exactly the `len` bytes at `offset` of `src`.
fn same_bytes(src: &File, offset: u64, len: u64, path: &Path) -> std::io::Result<bool> {
    let dst = File::open(path)?;
    if dst.metadata()?.len() != len {
        return Ok(false);
    }
    let (mut a, mut b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut at = 0;
    while at < len {
        let n = (len - at).min(a.len() as u64) as usize;
        src.read_exact_at(&mut a[..n], offset + at)?;
        dst.read_exact_at(&mut b[..n], at)?;
        if a[..n] != b[..n] {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Reads `end - pos` bytes of a file from `pos` on.
struct At<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl std::io::Read for At<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.end - self.pos).min(out.len() as u64) as usize;
        let n = self.file.read_at(&mut out[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A record's payload checked as a Part 10 file (`crate::dataset`) before it is replayed.
fn check_record(file: &File, r: &Found) -> Result<String, crate::dataset::Malformed> {
    crate::dataset::check_part10(
        || {
            Ok(std::io::BufReader::new(At {
                file,
                pos: r.payload_at,
                end: r.payload_at + r.len,
            }))
        },
        r.len,
        crate::dataset::MAX_FILE_BYTES,
    )
}

/// Create a segment file of `bytes`, every block written (zeros), so that records later only
/// overwrite allocated blocks; its first generation's header on top.
fn create_segment(path: &Path, bytes: u64, generation: u64) -> std::io::Result<File> {
    let part = path.with_extension("part");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&part)?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < bytes {
        let n = (bytes - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.write_all_at(&segment_header(generation), 0)?;
    file.sync_all()?;
    std::fs::rename(&part, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(file)
}

fn open_segments(root: &Path) -> std::io::Result<Vec<(PathBuf, File)>> {
    let dir = root.join(DIR);
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let f = OpenOptions::new().read(true).write(true).open(&p)?;
            Ok((p, f))
        })
        .collect()
}

/// A valid record found by `scan`.
struct Found {
    payload_at: u64,
    len: u64,
    meta: InstanceMeta,
}

/// The valid records of one segment, in order.
fn scan(file: &File) -> std::io::Result<(Option<u64>, Vec<Found>)> {
    let size = file.metadata()?.len();
    let mut slot = vec![0u8; SLOT as usize];
    if size < SLOT {
        return Ok((None, Vec::new()));
    }
    file.read_exact_at(&mut slot, 0)?;
    let Some(generation) = parse_segment_header(&slot) else {
        return Ok((None, Vec::new()));
    };
    let mut found = Vec::new();
    let mut at = SLOT;
    let mut payload = Vec::new();
    while at + SLOT <= size {
        file.read_exact_at(&mut slot, at)?;
        let (h, payload_at, next) = if let Some(nonce) = parse_start_header(&slot, generation) {
            let record = RecordAt {
                generation,
                nonce,
                start: at,
            };
            let Some((h, trailer_at)) = find_trailer(file, record, size)? else {
                break;
            };
            (h, at + SLOT, trailer_at + SLOT)
        } else if let Some(h) = parse_record_header(&slot, generation) {
            let next = at + SLOT + align(h.len);
            (h, at + SLOT, next)
        } else {
            break;
        };
        if payload_at + h.len > size {
            break;
        }
        if h.void {
            at = next;
            continue;
        }
        payload.resize(h.len as usize, 0);
        file.read_exact_at(&mut payload, payload_at)?;
        if crc32fast::hash(&payload) != h.payload_crc {
            break;
        }
        found.push(Found {
            payload_at,
            len: h.len,
            meta: h.meta,
        });
        at = next;
    }
    Ok((Some(generation), found))
}

/// The trailer of the version 2 record `record` and where it is: the first slot after the start
/// that is a valid trailer of this record (its nonce is unknown to the sender, so the payload
/// cannot hold one by design) and sits right after a payload of the length it gives.
fn find_trailer(
    file: &File,
    record: RecordAt,
    size: u64,
) -> std::io::Result<Option<(RecordHeader, u64)>> {
    const READ: u64 = 1 << 20;
    let mut buf = vec![0u8; READ as usize];
    let mut from = record.start + SLOT;
    while from + SLOT <= size {
        let n = (size - from).min(READ) / SLOT * SLOT;
        file.read_exact_at(&mut buf[..n as usize], from)?;
        for (i, slot) in buf[..n as usize].chunks_exact(SLOT as usize).enumerate() {
            let magic = &slot[..8];
            if magic != TRAILER_MAGIC && magic != VOID_MAGIC {
                continue;
            }
            let trailer_at = from + i as u64 * SLOT;
            if let Some(h) = parse_trailer(slot, record)
                && record.start + SLOT + align(h.len) == trailer_at
            {
                return Ok(Some((h, trailer_at)));
            }
        }
        from += n;
    }
    Ok(None)
}

/// After an unclean stop (or any stop): write every record still in the journal to its spool
/// file, index the ones the index lacks, make it durable, and start every segment afresh.
/// Returns how many records were replayed.
pub(super) fn recover(store: &Store) -> Result<usize, StoreError> {
    let root = store.root.clone();
    let segments = open_segments(&root).map_err(io(&root.join(DIR)))?;
    if segments.is_empty() {
        return Ok(0);
    }
    let mut replayed = 0;
    let mut max_generation = 0;
    for (path, file) in &segments {
        let (generation, found) = scan(file).map_err(io(path))?;
        max_generation = max_generation.max(generation.unwrap_or(0));
        for r in found {
            let sop = &r.meta.sop_instance_uid;
            if let Err(e) = check_record(file, &r) {
                tracing::error!(sop_instance_uid = %sop, error = %e, "journal record is not a well-formed instance; not replayed");
                continue;
            }
            let target = store.spool_path(&r.meta)?;
            let indexed_at: Option<String> = store
                .conn()?
                .query_row(
                    "SELECT path FROM instances WHERE sop_instance_uid = ?1",
                    params![sop],
                    |row| row.get(0),
                )
                .optional()?;
            if indexed_at
                .as_deref()
                .is_some_and(|p| Path::new(p) != target)
            {
                tracing::warn!(sop_instance_uid = %sop, "journal record names another study or series than the stored instance of its SOP Instance UID; the stored one is kept");
                continue;
            }
            // Never over an instance already in the spool: that one was acknowledged first (the
            // materialiser copies only records that were indexed).
            if target.is_file() {
                if !same_bytes(file, r.payload_at, r.len, &target).map_err(io(&target))? {
                    tracing::warn!(sop_instance_uid = %sop, "journal record differs from the instance in the spool; the spool file is kept");
                }
            } else {
                copy_out(file, r.payload_at, r.len, &target).map_err(io(&target))?;
            }
            let mut db = store.conn()?;
            let tx = db.transaction()?;
            let flagged = tx.execute(
                "UPDATE instances SET materialised = 1 WHERE sop_instance_uid = ?1",
                params![r.meta.sop_instance_uid],
            )?;
            if flagged == 0 {
                spool::index(&tx, &r.meta, &target, r.len, true)?;
            }
            tx.commit()?;
            replayed += 1;
        }
    }
    sync_file_system(&root).map_err(io(&root))?;
    // A row still waiting for a spool file has no record any more: its segment was reused, which
    // happens only after its file was made durable, so only the index's flag was lost.
    let db = store.conn()?;
    let waiting: Vec<(String, String)> = {
        let mut q =
            db.prepare("SELECT sop_instance_uid, path FROM instances WHERE materialised = 0")?;
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    for (sop, path) in waiting {
        if Path::new(&path).is_file() {
            db.execute(
                "UPDATE instances SET materialised = 1 WHERE sop_instance_uid = ?1",
                params![sop],
            )?;
        } else {
            // Cannot happen by the order above; say so loudly rather than block the study forever.
            tracing::error!(sop_instance_uid = %sop, "instance neither in the journal nor in the spool; dropped from the index");
            db.execute(
                "DELETE FROM instances WHERE sop_instance_uid = ?1",
                params![sop],
            )?;
        }
    }
    drop(db);
    for (i, (path, file)) in segments.iter().enumerate() {
        start_generation(file, max_generation + 1 + i as u64).map_err(io(path))?;
    }
    Ok(replayed)
}

impl Journal {
    /// Open the segments under `root` (recovered by `Store::open`) and start the materialiser.
    pub fn start(root: &Path, config: JournalConfig) -> Result<Arc<Journal>, StoreError> {
        let dir = root.join(DIR);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut segments = Vec::new();
        let mut next_generation = 1;
        for (path, file) in open_segments(root).map_err(io(&dir))? {
            let mut head = [0u8; 24];
            file.read_exact_at(&mut head, 0).map_err(io(&path))?;
            let end = file.metadata().map_err(io(&path))?.len();
            let Some(generation) = parse_segment_header(&head) else {
                tracing::warn!(path = %path.display(), "journal segment without a valid header; not used");
                continue;
            };
            next_generation = next_generation.max(generation + 1);
            segments.push(Segment {
                path,
                file: Arc::new(file),
                generation,
                append_at: SLOT,
                end,
                live: 0,
                leased: false,
            });
        }
        let db = Connection::open(root.join("pulmo.sqlite"))?;
        db.busy_timeout(Duration::from_secs(30))?;
        let (tx, rx) = mpsc::channel();
        let journal = Arc::new(Journal {
            root: root.to_path_buf(),
            config,
            pool: Mutex::new(Pool {
                segments,
                next_generation,
                growing: false,
                grow_failed: None,
            }),
            tx: Mutex::new(Some(tx)),
            worker: Mutex::new(None),
            paused: AtomicBool::new(false),
        });
        let j = journal.clone();
        let worker = std::thread::Builder::new()
            .name("materialiser".into())
            .spawn(move || j.materialise_loop(&rx, &db))
            .map_err(io(&dir))?;
        if let Ok(mut w) = journal.worker.lock() {
            *w = Some(worker);
        }
        let have = journal.pool.lock().map(|p| p.segments.len()).unwrap_or(0);
        // All of them, in the background, so that the first study finds them ready: the journal's
        // disk use is fixed and known (journal_segments x journal_segment_mib).
        for _ in have..config.max_segments {
            journal.send(Msg::Grow);
        }
        Ok(journal)
    }

    fn send(&self, msg: Msg) -> bool {
        self.tx
            .lock()
            .ok()
            .and_then(|t| t.as_ref().map(|t| t.send(msg).is_ok()))
            .unwrap_or(false)
    }

    /// A segment for one new record, or `None` when none has room now (the caller then makes
    /// its own file durable; a new segment is being made when the limit allows).
    pub fn begin(self: &Arc<Self>) -> Option<RecordWriter> {
        let mut pool = self.pool.lock().ok()?;
        let free = pool
            .segments
            .iter()
            .position(|s| !s.leased && s.end.saturating_sub(s.append_at) >= MIN_ROOM);
        let Some(i) = free else {
            let retry = pool.grow_failed.is_none_or(|t| t.elapsed() > GROW_RETRY);
            if !pool.growing && retry && pool.segments.len() < self.config.max_segments {
                pool.growing = true;
                self.send(Msg::Grow);
            }
            return None;
        };
        let s = &mut pool.segments[i];
        let nonce = uuid::Uuid::new_v4().as_u64_pair().0;
        // Written now, so that it goes to the disk with the payload's first part.
        if let Err(e) = s
            .file
            .write_all_at(&start_header(s.generation, nonce), s.append_at)
        {
            tracing::warn!(path = %s.path.display(), error = %e, "cannot write to the journal");
            return None;
        }
        s.leased = true;
        Some(RecordWriter {
            journal: self.clone(),
            segment: i,
            file: s.file.clone(),
            generation: s.generation,
            nonce,
            start: s.append_at,
            end: s.end,
            len: 0,
            written: 0,
            writeback_from: 0,
            buf: Vec::with_capacity(GATHER),
            crc: crc32fast::Hasher::new(),
            void_trailer: None,
            released: false,
        })
    }

    fn release(&self, segment: usize, sealed_end: Option<u64>) {
        if let Ok(mut pool) = self.pool.lock()
            && let Some(s) = pool.segments.get_mut(segment)
        {
            s.leased = false;
            if let Some(end) = sealed_end {
                s.append_at = end;
                s.live += 1;
            }
        }
    }

    /// Hand a sealed, indexed record to the materialiser.
    fn enqueue(&self, sealed: Sealed, path: PathBuf, sop_instance_uid: String) {
        let sent = self.send(Msg::Record(Pending {
            segment: sealed.segment,
            payload_at: sealed.start + SLOT,
            len: sealed.len,
            path,
            sop_instance_uid,
        }));
        if !sent {
            // Only while stopping: the record is durable and the next start replays it.
            tracing::warn!("journal stopping; record left for recovery");
        }
    }

    /// Write out every record waiting and wait for it (tests, and a study that must be read now).
    pub fn drain(&self) {
        let (ack, done) = mpsc::channel();
        if self.send(Msg::Drain(ack)) {
            done.recv().ok();
        }
    }

    /// Write out what waits and stop the materialiser (a clean stop).
    pub fn shutdown(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let worker = self.worker.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = worker {
            w.join().ok();
        }
    }

    fn materialise_loop(&self, rx: &mpsc::Receiver<Msg>, db: &Connection) {
        let mut batch: Vec<Pending> = Vec::new();
        let mut first_failure: Option<Instant> = None;
        loop {
            let msg = if batch.is_empty() {
                rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
            } else {
                rx.recv_timeout(IDLE)
            };
            match msg {
                Ok(Msg::Record(p)) => {
                    batch.push(p);
                    if !self.under_pressure() {
                        continue;
                    }
                }
                Ok(Msg::Grow) => {
                    self.grow();
                    continue;
                }
                Ok(Msg::Drain(ack)) => {
                    self.write_out(&mut batch, db);
                    ack.send(()).ok();
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.write_out(&mut batch, db);
                    return;
                }
            }
            self.write_out(&mut batch, db);
            if batch.is_empty() || self.paused.load(Ordering::Relaxed) {
                first_failure = None;
            } else {
                // The disk is full or failing: records stay in the journal (durable) and are
                // tried again; do not spin.
                let since = *first_failure.get_or_insert_with(Instant::now);
                tracing::error!(
                    waiting = batch.len(),
                    since_s = since.elapsed().as_secs(),
                    "cannot write received instances to the spool; retrying"
                );
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }

    /// Whether so little room is left in the journal that records must be written out now.
    fn under_pressure(&self) -> bool {
        let Ok(pool) = self.pool.lock() else {
            return true;
        };
        // A segment with less than `MIN_ROOM` left takes no record: its room does not count.
        let (room, capacity) = pool.segments.iter().fold((0, 0), |(r, c), s| {
            let left = s.end.saturating_sub(s.append_at);
            let usable = if left >= MIN_ROOM { left } else { 0 };
            (r + usable, c + s.end.saturating_sub(SLOT))
        });
        (room as f64) < PRESSURE * capacity as f64
    }

    /// Copy a batch of records to their spool files, flag them in the index, make all of it
    /// durable with one `syncfs`, then free their segments. What fails stays in `batch`.
    fn write_out(&self, batch: &mut Vec<Pending>, db: &Connection) {
        if batch.is_empty() || self.paused.load(Ordering::Relaxed) {
            return;
        }
        let files: Vec<Arc<File>> = match self.pool.lock() {
            Ok(pool) => pool.segments.iter().map(|s| s.file.clone()).collect(),
            Err(_) => return,
        };
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for p in batch.drain(..) {
            let copied = files
                .get(p.segment)
                .ok_or_else(|| std::io::Error::other("no such segment"))
                .and_then(|f| copy_out(f, p.payload_at, p.len, &p.path));
            match copied {
                Ok(()) => done.push(p),
                Err(e) => {
                    tracing::warn!(path = %p.path.display(), error = %e, "cannot write a spool file");
                    failed.push(p);
                }
            }
        }
        let flagged = (|| -> rusqlite::Result<()> {
            let tx = db.unchecked_transaction()?;
            {
                let mut q = tx.prepare_cached(
                    "UPDATE instances SET materialised = 1 WHERE sop_instance_uid = ?1",
                )?;
                for p in &done {
                    q.execute(params![p.sop_instance_uid])?;
                }
            }
            tx.commit()
        })();
        let synced = sync_file_system(&self.root);
        if let Err(e) = &flagged {
            tracing::warn!(error = %e, "cannot flag spool files in the index");
        }
        if flagged.is_err() || synced.is_err() {
            if let Err(e) = &synced {
                tracing::warn!(error = %e, "cannot make the spool durable");
            }
            failed.extend(done);
            *batch = failed;
            return;
        }
        *batch = failed;
        let Ok(mut pool) = self.pool.lock() else {
            return;
        };
        let mut generation = pool.next_generation;
        for p in &done {
            if let Some(s) = pool.segments.get_mut(p.segment) {
                s.live = s.live.saturating_sub(1);
            }
        }
        for s in pool.segments.iter_mut() {
            if !s.leased && s.live == 0 && s.append_at > SLOT {
                match start_generation(&s.file, generation) {
                    Ok(()) => {
                        s.generation = generation;
                        s.append_at = SLOT;
                        generation += 1;
                    }
                    Err(e) => {
                        tracing::warn!(path = %s.path.display(), error = %e, "cannot reuse a journal segment");
                    }
                }
            }
        }
        pool.next_generation = generation;
    }

    #[cfg(test)]
    fn pause(&self) {
        self.paused.store(true, Ordering::Relaxed);
    }

    fn grow(&self) {
        let (index, generation) = match self.pool.lock() {
            Ok(mut p)
                if p.segments.len() >= self.config.max_segments
                    || p.grow_failed.is_some_and(|t| t.elapsed() < GROW_RETRY) =>
            {
                p.growing = false;
                return;
            }
            Ok(mut p) => {
                let g = p.next_generation;
                p.next_generation += 1;
                (p.segments.len(), g)
            }
            Err(_) => return,
        };
        let path = segment_path(&self.root, index);
        let made = create_segment(&path, self.config.segment_bytes, generation);
        let Ok(mut pool) = self.pool.lock() else {
            return;
        };
        pool.growing = false;
        match made {
            Ok(file) => {
                tracing::debug!(path = %path.display(), "journal segment created");
                pool.segments.push(Segment {
                    path,
                    file: Arc::new(file),
                    generation,
                    append_at: SLOT,
                    end: self.config.segment_bytes,
                    live: 0,
                    leased: false,
                });
            }
            Err(e) => {
                pool.grow_failed = Some(Instant::now());
                tracing::warn!(path = %path.display(), error = %e, "cannot create a journal segment");
                std::fs::remove_file(path.with_extension("part")).ok();
            }
        }
    }
}

impl RecordWriter {
    /// Whether `more` payload bytes still fit in this segment.
    pub fn fits(&self, more: usize) -> bool {
        // The trailer's slot after the payload.
        self.start + SLOT + align(self.len + more as u64) + SLOT <= self.end
    }

    /// Append payload (the caller checked `fits`). Fragments as large as a PDU go to the file
    /// directly; small ones are gathered first.
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.void_trailer.is_some() {
            return Err(std::io::Error::other("payload already finished"));
        }
        if !self.fits(data.len()) {
            return Err(std::io::Error::other("journal segment full"));
        }
        self.crc.update(data);
        self.len += data.len() as u64;
        if self.buf.len() + data.len() < GATHER {
            self.buf.extend_from_slice(data);
            return Ok(());
        }
        self.flush()?;
        self.write_through(data)
    }

    /// The payload is complete: write what is gathered and the trailer right after it, and start
    /// their writeback as one piece, so that they go to the disk while the caller parses the
    /// data set and the seal's flush finds nothing else to write (a trailer contiguous with the
    /// payload's tail made the flush about 140 µs shorter than a header rewritten at the
    /// record's start; BENCHMARKS.md, "Receiving").
    pub fn finish_payload(&mut self, meta: &InstanceMeta) -> std::io::Result<()> {
        if self.void_trailer.is_some() {
            return Err(std::io::Error::other("payload already finished"));
        }
        self.flush()?;
        let json = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
        let crc = self.crc.clone().finalize();
        let at = RecordAt {
            generation: self.generation,
            nonce: self.nonce,
            start: self.start,
        };
        let trailer_bytes = trailer(TRAILER_MAGIC, at, self.len, crc, &json);
        if trailer_bytes.len() as u64 > SLOT {
            return Err(std::io::Error::other("record metadata too long"));
        }
        self.file.write_all_at(&trailer_bytes, self.trailer_at())?;
        self.void_trailer = Some(trailer(VOID_MAGIC, at, self.len, crc, &json));
        self.start_writeback_to(self.trailer_at() + SLOT);
        Ok(())
    }

    fn trailer_at(&self) -> u64 {
        self.start + SLOT + align(self.len)
    }

    /// Start the writeback of what was written since the last start, up to `end` (the first
    /// time, with the start header before it).
    fn start_writeback_to(&mut self, end: u64) {
        let from = if self.writeback_from == 0 {
            self.start
        } else {
            self.start + SLOT + self.writeback_from
        };
        super::start_writeback(&self.file, from, end - from);
        self.writeback_from = self.written;
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let written = self.write_through(&buf);
        self.buf = buf;
        self.buf.clear();
        written
    }

    fn write_through(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.file
            .write_all_at(data, self.start + SLOT + self.written)?;
        self.written += data.len() as u64;
        if self.written - self.writeback_from >= WRITEBACK_CHUNK {
            self.start_writeback_to(self.start + SLOT + self.written);
        }
        Ok(())
    }

    /// Copy the payload so far into `out` and give the segment back as it was: for an instance
    /// that outgrows the segment.
    pub fn spill(mut self, out: &mut dyn Write) -> std::io::Result<()> {
        self.flush()?;
        copy_to(&self.file, self.start + SLOT, self.written, out)
    }

    /// Make the record durable (after `finish_payload`).
    pub fn seal(mut self) -> std::io::Result<Sealed> {
        let Some(void_trailer) = self.void_trailer.take() else {
            return Err(std::io::Error::other("record sealed before its trailer"));
        };
        if let Err(e) = self.file.sync_data() {
            self.file
                .write_all_at(&void_trailer, self.trailer_at())
                .ok();
            return Err(e);
        }
        self.released = true;
        let end = self.trailer_at() + SLOT;
        self.journal.release(self.segment, Some(end));
        Ok(Sealed {
            journal: self.journal.clone(),
            segment: self.segment,
            file: self.file.clone(),
            start: self.start,
            len: self.len,
            void_trailer,
        })
    }
}

impl Sealed {
    /// The index refused its instance: void the record (best effort; should it survive a crash,
    /// it is replayed as a stored instance, which the sender's retry then finds as a duplicate).
    fn retract(self) {
        let trailer_at = self.start + SLOT + align(self.len);
        self.file.write_all_at(&self.void_trailer, trailer_at).ok();
        if let Ok(mut pool) = self.journal.pool.lock()
            && let Some(s) = pool.segments.get_mut(self.segment)
        {
            s.live = s.live.saturating_sub(1);
        }
    }
}

impl Drop for RecordWriter {
    fn drop(&mut self) {
        if !self.released {
            // Refused after its trailer was written (a duplicate, a data set that does not
            // parse): voided, so that a crash before the next record overwrites it does not
            // bring it back (best effort: it would then be stored, never lost).
            if let Some(void) = self.void_trailer.take() {
                self.file.write_all_at(&void, self.trailer_at()).ok();
            }
            self.journal.release(self.segment, None);
        }
    }
}

impl Store {
    /// Start the journal (`pulmo serve`); without it every instance is synced on its own.
    pub fn start_journal(&self, config: JournalConfig) -> Result<(), StoreError> {
        if config.max_segments == 0 || self.journal.get().is_some() {
            return Ok(());
        }
        let j = Journal::start(&self.root, config)?;
        if let Err(j) = self.journal.set(j) {
            j.shutdown();
        }
        Ok(())
    }

    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.get()
    }

    /// Index an instance whose record is durable in the journal (`writer` holds its payload),
    /// before Success. Its spool file is written in the background.
    pub fn commit_journaled(
        &self,
        writer: RecordWriter,
        m: &InstanceMeta,
    ) -> Result<Committed, StoreError> {
        let path = self.spool_path(m)?;
        if let Some(existing) = self.duplicate_of(m)? {
            return Ok(Committed::Duplicate(existing));
        }
        let jdir = self.root.join(DIR);
        // Sealed without holding the index, so that concurrent associations sync side by side.
        let sealed = writer.seal().map_err(io(&jdir))?;
        let indexed = (|| -> Result<(), StoreError> {
            let mut db = self.conn()?;
            let tx = db.transaction()?;
            spool::index(&tx, m, &path, sealed.len, false)?;
            tx.commit()?;
            Ok(())
        })();
        match indexed {
            Ok(()) => {
                let journal = sealed.journal.clone();
                journal.enqueue(sealed, path.clone(), m.sop_instance_uid.clone());
                Ok(Committed::Stored(path))
            }
            Err(e) => {
                sealed.retract();
                // The same instance, sent on two associations at once: the other one won.
                match self.duplicate_of(m)? {
                    Some(existing) => Ok(Committed::Duplicate(existing)),
                    None => Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::spool::tests::meta;

    const SMALL: JournalConfig = JournalConfig {
        max_segments: 2,
        segment_bytes: 4 << 20,
    };

    fn store_with_journal(dir: &Path) -> Store {
        let store = Store::open(dir).expect("open");
        store.start_journal(SMALL).expect("journal");
        store
    }

    /// The first record waits for a segment to be made; later ones get one.
    fn writer(store: &Store) -> RecordWriter {
        let j = store.journal().expect("journal");
        for _ in 0..500 {
            if let Some(w) = j.begin() {
                return w;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no journal segment became ready");
    }

    /// A well-formed Part 10 file of `n` bytes (recovery replays nothing else): the preamble, a
    /// meta group naming explicit VR little endian, one OB element; every byte but the prefix,
    /// the meta group and the element's header is a pattern of `seed`.
    fn payload(n: usize, seed: u8) -> Vec<u8> {
        let mut v: Vec<u8> = (0..128)
            .map(|i: usize| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        v.extend(b"DICM");
        v.extend([0x02, 0x00, 0x10, 0x00]);
        v.extend(b"UI");
        v.extend(20u16.to_le_bytes());
        v.extend(b"1.2.840.10008.1.2.1\0");
        v.extend([0x09, 0x00, 0x00, 0x10]);
        v.extend(b"OB\0\0");
        let value = n - v.len() - 4;
        v.extend((value as u32).to_le_bytes());
        v.extend((0..value).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
        assert!(
            crate::dataset::check(
                &v[160..],
                (n - 160) as u64,
                crate::dataset::Encoding::of("1.2.840.10008.1.2.1").expect("ts")
            )
            .is_ok()
        );
        v
    }

    #[test]
    fn headers_round_trip_and_reject_damage() {
        let h = segment_header(7);
        assert_eq!(parse_segment_header(&h), Some(7));
        let mut bad = h.clone();
        bad[13] ^= 1;
        assert_eq!(parse_segment_header(&bad), None);

        let json = serde_json::to_vec(&meta("1.2.3.4.5")).expect("json");
        let r = record_header(RECORD_MAGIC, 9, 1234, 0xdead_beef, &json);
        let h = parse_record_header(&r, 9).expect("valid");
        assert_eq!(
            (
                h.len,
                h.payload_crc,
                h.meta.sop_instance_uid.as_str(),
                h.void
            ),
            (1234, 0xdead_beef, "1.2.3.4.5", false)
        );
        let v = record_header(VOID_MAGIC, 9, 1234, 0xdead_beef, &json);
        assert!(parse_record_header(&v, 9).expect("valid").void);
        assert!(
            parse_record_header(&r, 10).is_none(),
            "an old generation is not valid"
        );
        for i in [0, 21, RECORD_FIXED + 3, r.len() - 1] {
            let mut bad = r.clone();
            bad[i] ^= 0x40;
            assert!(parse_record_header(&bad, 9).is_none(), "byte {i} flipped");
        }
    }

    /// As after a crash that only the journal survived: the spool file and every index row gone.
    fn keep_only_the_journal(store: &Store, spool_file: &Path) {
        std::fs::remove_file(spool_file).ok();
        store
            .conn()
            .expect("db")
            .execute("DELETE FROM instances", [])
            .expect("delete");
    }

    /// One record written, finished and committed: its spool path.
    fn stored(store: &Store, data: &[u8], sop: &str) -> PathBuf {
        let mut w = writer(store);
        w.write(data).expect("write");
        w.finish_payload(&meta(sop)).expect("finish");
        match store.commit_journaled(w, &meta(sop)).expect("commit") {
            Committed::Stored(path) => path,
            other => panic!("not stored: {other:?}"),
        }
    }

    #[test]
    fn records_reach_their_spool_files_and_segments_are_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_with_journal(dir.path());
        // More than the segments hold together: they must be reused along the way.
        let mut sent = Vec::new();
        for i in 0..40 {
            let sop = format!("1.2.3.4.{i}");
            let data = payload(300_000 + i * 1000, i as u8);
            let mut w = writer(&store);
            // The last bytes are gathered, not yet written: `finish_payload` must write them.
            let tail = data.len() - 100;
            w.write(&data[..tail]).expect("write");
            w.write(&data[tail..]).expect("write");
            w.finish_payload(&meta(&sop)).expect("finish");
            assert!(w.write(b"more").is_err(), "written after its trailer");
            let c = store.commit_journaled(w, &meta(&sop)).expect("commit");
            let Committed::Stored(path) = c else {
                panic!("not stored: {c:?}")
            };
            sent.push((path, data));
            if i % 10 == 9 {
                store.journal().expect("journal").drain();
            }
        }
        store.journal().expect("journal").drain();
        for (path, data) in &sent {
            assert_eq!(&std::fs::read(path).expect("spool file"), data);
        }
        let waiting: i64 = store
            .conn()
            .expect("db")
            .query_row(
                "SELECT COUNT(*) FROM instances WHERE materialised = 0",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(waiting, 0);
        let segments = std::fs::read_dir(dir.path().join(DIR))
            .expect("dir")
            .count();
        assert!(segments <= 2, "{segments} segments for a limit of 2");
        // A duplicate is recognised before the flush.
        let mut w = writer(&store);
        w.write(b"again").expect("write");
        w.finish_payload(&meta("1.2.3.4.0")).expect("finish");
        assert!(matches!(
            store
                .commit_journaled(w, &meta("1.2.3.4.0"))
                .expect("commit"),
            Committed::Duplicate(_)
        ));
    }

    #[test]
    fn a_record_spilled_to_a_file_leaves_its_segment_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_with_journal(dir.path());
        let data = payload(100_000, 5);
        let mut w = writer(&store);
        let (segment, start) = (w.segment, w.start);
        w.write(&data[..40_000]).expect("write");
        w.write(&data[40_000..]).expect("write");
        // Far more than a segment holds does not fit.
        assert!(!w.fits(SMALL.segment_bytes as usize));
        let mut out = Vec::new();
        w.spill(&mut out).expect("spill");
        assert_eq!(out, data);
        let w = writer(&store);
        assert_eq!(
            (w.segment, w.start),
            (segment, start),
            "the segment moved on"
        );
    }

    #[test]
    fn a_crash_before_materialisation_is_replayed_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = payload(200_000, 3);
        let path = {
            let store = store_with_journal(dir.path());
            store.journal().expect("journal").pause();
            let path = stored(&store, &data, "1.2.3.4.77");
            // An unsealed record (a transfer cut off) is never replayed.
            let mut cut = writer(&store);
            cut.write(&payload(5000, 9)).expect("write");
            std::mem::forget(cut);
            assert_eq!(store.counts().expect("counts").in_journal, 1);
            // A study is not analysed while an instance of it is only in the journal.
            assert_eq!(store.promote_stable(0).expect("promote").len(), 1);
            assert!(store.claim_job(0).expect("claim").is_none());
            // As after `kill -9` before the materialiser ran: the spool file and the index's
            // row are gone (the index lost it to a power cut), only the journal has it.
            keep_only_the_journal(&store, &path);
            // Dropped without a clean stop; the paused materialiser never writes it.
            drop(store);
            path
        };
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(std::fs::read(&path).expect("replayed"), data);
        assert_eq!(store.counts().expect("counts").instances, 1);
        assert_eq!(store.counts().expect("counts").in_journal, 0);
        assert!(store.claim_job(0).expect("claim").is_some());
        // Recovery started every segment afresh: nothing is replayed twice.
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.counts().expect("counts").instances, 1);
    }

    #[test]
    fn a_voided_record_does_not_hide_the_records_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let later = payload(50_000, 4);
        {
            let store = store_with_journal(dir.path());
            store.journal().expect("journal").pause();
            // Sealed, then refused by the index (as when a concurrent association won).
            let mut w = writer(&store);
            let segment = w.segment;
            w.write(&payload(30_000, 2)).expect("write");
            w.finish_payload(&meta("1.2.3.4.60")).expect("finish");
            w.seal().expect("seal").retract();
            let mut w = writer(&store);
            assert_eq!(w.segment, segment, "the next record is in the same segment");
            w.write(&later).expect("write");
            w.finish_payload(&meta("1.2.3.4.61")).expect("finish");
            let Ok(Committed::Stored(path)) = store.commit_journaled(w, &meta("1.2.3.4.61")) else {
                panic!("not stored")
            };
            keep_only_the_journal(&store, &path);
            // Dropped without a clean stop; the paused materialiser never writes it.
        }
        let store = Store::open(dir.path()).expect("reopen");
        let replayed = store
            .instance_path("1.2.3.4.61")
            .expect("query")
            .expect("the record after the voided one is replayed");
        assert_eq!(std::fs::read(replayed).expect("spool file"), later);
        assert!(
            store.instance_path("1.2.3.4.60").expect("query").is_none(),
            "the voided record is not"
        );
    }

    #[test]
    fn a_payload_holding_trailer_bytes_or_a_refused_record_does_not_mislead_recovery() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Slot-aligned copies of the trailer's magic inside the payload: recovery must read on
        // past them to the record's own trailer.
        let mut data = payload(3 * SLOT as usize + 500, 6);
        for k in 0..4 {
            // The payload starts on a slot boundary of the file.
            let at = k * SLOT as usize;
            data[at..at + 8].copy_from_slice(TRAILER_MAGIC);
        }
        let path = {
            let store = store_with_journal(dir.path());
            store.journal().expect("journal").pause();
            let path = stored(&store, &data, "1.2.3.4.91");
            // Then one refused after its trailer was written (as a data set that does not
            // parse), the last thing before the crash.
            let mut refused = writer(&store);
            refused.write(&payload(20_000, 8)).expect("write");
            refused.finish_payload(&meta("1.2.3.4.90")).expect("finish");
            drop(refused);
            keep_only_the_journal(&store, &path);
            path
        };
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(std::fs::read(&path).expect("replayed"), data);
        assert!(store.instance_path("1.2.3.4.90").expect("query").is_none());
    }

    #[test]
    fn replay_never_replaces_a_stored_instance_nor_replays_a_malformed_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = payload(20_000, 1);
        let path = {
            let store = store_with_journal(dir.path());
            let path = stored(&store, &first, "1.2.3.4.60");
            store.journal().expect("journal").drain();
            assert_eq!(std::fs::read(&path).expect("materialised"), first);
            // Then, before the segment is reused, a record of another data set under the same
            // SOP Instance UID whose trailer reached the disk before the process died (as the
            // hostile data set of issue 38 did) ...
            let mut other = writer(&store);
            other.write(&payload(20_000, 2)).expect("write");
            other.finish_payload(&meta("1.2.3.4.60")).expect("finish");
            std::mem::forget(other);
            // ... and one whose payload is not a well-formed instance.
            let mut garbled = writer(&store);
            garbled.write(&[0xAB; 9000]).expect("write");
            garbled.finish_payload(&meta("1.2.3.4.61")).expect("finish");
            std::mem::forget(garbled);
            path
        };
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(std::fs::read(&path).expect("kept"), first);
        assert!(store.instance_path("1.2.3.4.61").expect("query").is_none());
        assert_eq!(store.counts().expect("counts").instances, 1);
    }

    #[test]
    fn records_of_the_first_format_are_still_replayed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = payload(10_000, 1);
        let m = meta("1.2.3.4.95");
        {
            let store = store_with_journal(dir.path());
            store.journal().expect("journal").pause();
            // Left by a node of the previous version that was killed: header first, then payload.
            let w = writer(&store);
            let (file, start, generation) = (w.file.clone(), w.start, w.generation);
            drop(w);
            let json = serde_json::to_vec(&m).expect("json");
            let header = record_header(
                RECORD_MAGIC,
                generation,
                data.len() as u64,
                crc32fast::hash(&data),
                &json,
            );
            file.write_all_at(&header, start).expect("header");
            file.write_all_at(&data, start + SLOT).expect("payload");
        }
        let store = Store::open(dir.path()).expect("reopen");
        let replayed = store
            .instance_path("1.2.3.4.95")
            .expect("query")
            .expect("replayed");
        assert_eq!(std::fs::read(replayed).expect("spool file"), data);
    }
}

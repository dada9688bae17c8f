//! NDJSON lines to Arrow record batches, one batch per family per chunk.
//!
//! Each line is parsed once into (key, raw JSON value) pairs borrowed from the
//! line, validated against the field table in `seedwatch_schemas::fields`,
//! and appended straight into column builders. Nothing is allocated per event
//! on the common path: strings without escapes are borrowed, enum values are
//! replaced by their static spelling and scratch buffers are reused. A line
//! that fails any check becomes a dead letter with a reason code and message.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use seedwatch_schemas::arrow::array::{
    ArrayRef, AsArray, BooleanBuilder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use seedwatch_schemas::arrow::record_batch::RecordBatch;
use seedwatch_schemas::arrow_schema::event_schema;
use seedwatch_schemas::dead_letter::{dead_letter_schema, ReasonCode};
use seedwatch_schemas::fields::{
    self, Field, Kind, Presence, MAX_DEAD_LETTER_RAW_BYTES, MAX_EXTRA_BYTES, MAX_LINE_BYTES,
};
use seedwatch_schemas::{EventBatch, Family, STATE_CODES};
use serde::de::DeserializeSeed;
use smallvec::SmallVec;

use crate::json::{ObjectSeed, Pairs};
use crate::redact::{Fingerprinter, Redactor};
use crate::source::LineChunk;
use crate::tenancy::Tenancy;
use crate::IngestError;

/// Earliest accepted event time: 2000-01-01T00:00:00Z. Anything earlier is
/// almost always epoch seconds sent where milliseconds were expected.
const MIN_TIME_MS: i64 = 946_684_800_000;
/// Latest accepted event time: 2100-01-01T00:00:00Z.
const MAX_TIME_MS: i64 = 4_102_444_800_000;
/// Most fields of any family (common + family fields).
const MAX_FIELDS: usize = 16;

/// Counts from decoding one chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Lines read.
    pub lines: u64,
    /// Bytes read (as read, including over-long tails).
    pub bytes: u64,
    /// Events decoded, by [`Family::index`].
    pub events: [u64; 4],
    /// Dead letters, by reason (index of [`ReasonCode::ALL`]).
    pub dead: [u64; ReasonCode::ALL.len()],
    /// Lines in which a raw credential was replaced.
    pub redacted: u64,
}

impl DecodeStats {
    /// Add another chunk's counts.
    pub fn merge(&mut self, other: &DecodeStats) {
        self.lines += other.lines;
        self.bytes += other.bytes;
        self.redacted += other.redacted;
        for (a, b) in self.events.iter_mut().zip(other.events) {
            *a += b;
        }
        for (a, b) in self.dead.iter_mut().zip(other.dead) {
            *a += b;
        }
    }

    /// Total dead letters.
    pub fn dead_total(&self) -> u64 {
        self.dead.iter().sum()
    }

    /// Total events.
    pub fn events_total(&self) -> u64 {
        self.events.iter().sum()
    }
}

/// The result of decoding one chunk.
#[derive(Debug, Default)]
pub struct DecodedChunk {
    /// One batch per family that had events.
    pub events: Vec<EventBatch>,
    /// Dead letters, when there were any.
    pub dead_letters: Option<RecordBatch>,
    /// Counts.
    pub stats: DecodeStats,
}

impl DecodedChunk {
    /// Newest event time in the chunk (UTC ms), across families.
    pub fn max_event_time(&self) -> Option<i64> {
        self.events
            .iter()
            .filter_map(|e| e.batch.column_by_name("time"))
            .filter_map(|c| c.as_primitive_opt::<seedwatch_schemas::arrow::datatypes::TimestampMillisecondType>())
            .filter_map(seedwatch_schemas::arrow::compute::max)
            .max()
    }
}

/// Why a line was rejected.
#[derive(Debug)]
struct Reject {
    code: ReasonCode,
    message: String,
    family: Option<Family>,
}

fn reject(code: ReasonCode, message: impl Into<String>) -> Reject {
    Reject { code, message: message.into(), family: None }
}

/// A validated value, borrowed from the line where possible.
#[derive(Debug, Clone, Default)]
enum Cell<'a> {
    #[default]
    Null,
    Str(Cow<'a, str>),
    /// A derived event id, written as 32 hex characters.
    Hash(u128),
    Int(i64),
    Bool(bool),
    Time(i64),
}

enum Column {
    Str(StringBuilder),
    Int(Int64Builder),
    Bool(BooleanBuilder),
    Time(TimestampMillisecondBuilder),
}

impl Column {
    fn for_kind(kind: Kind) -> Self {
        match kind {
            Kind::Int { .. } => Column::Int(Int64Builder::new()),
            Kind::Bool => Column::Bool(BooleanBuilder::new()),
            Kind::Time => Column::Time(TimestampMillisecondBuilder::new().with_timezone("UTC")),
            _ => Column::Str(StringBuilder::new()),
        }
    }

    fn append(&mut self, cell: &Cell<'_>) {
        match (self, cell) {
            (Column::Str(b), Cell::Str(s)) => b.append_value(s),
            (Column::Str(b), Cell::Hash(h)) => {
                let mut hex = [0u8; 32];
                // 16 bytes -> 32 hex digits (the same as `{h:032x}`); only a size mismatch fails.
                if hex::encode_to_slice(h.to_be_bytes(), &mut hex).is_ok() {
                    b.append_value(std::str::from_utf8(&hex).unwrap_or_default());
                } else {
                    b.append_null();
                }
            }
            (Column::Int(b), Cell::Int(v)) => b.append_value(*v),
            (Column::Bool(b), Cell::Bool(v)) => b.append_value(*v),
            (Column::Time(b), Cell::Time(v)) => b.append_value(*v),
            (Column::Str(b), _) => b.append_null(),
            (Column::Int(b), _) => b.append_null(),
            (Column::Bool(b), _) => b.append_null(),
            (Column::Time(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Str(b) => Arc::new(b.finish()),
            Column::Int(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Time(b) => Arc::new(b.finish()),
        }
    }
}

/// Column builders of one family's table.
struct FamilyBuilder {
    family: Family,
    fields: Vec<&'static Field>,
    columns: Vec<Column>,
    extra: StringBuilder,
    source: StringBuilder,
    line: Int64Builder,
    rows: usize,
    /// Positions of fields the decoder fills in itself.
    idx_event_id: usize,
    idx_license: usize,
    idx_time: usize,
    idx_location: usize,
    idx_state: usize,
    idx_key_id: Option<usize>,
    /// The field the k-th key of the last line was: exporters write keys in one
    /// order, so a line's keys are found with one comparison each, not a scan.
    key_order: [u8; MAX_KEYS_REMEMBERED],
}

/// Keys per line whose field position is remembered (more are looked up by scan).
const MAX_KEYS_REMEMBERED: usize = 32;

impl FamilyBuilder {
    /// Position of field `key`, the `k`-th key of the line.
    fn field_index(&mut self, k: usize, key: &str) -> Option<usize> {
        let guess = self.key_order.get(k).map_or(usize::MAX, |i| *i as usize);
        if self.fields.get(guess).is_some_and(|f| f.name == key) {
            return Some(guess);
        }
        let found = self.fields.iter().position(|f| f.name == key);
        if let Some(slot) = self.key_order.get_mut(k) {
            *slot = found.map_or(u8::MAX, |i| i as u8);
        }
        found
    }

    fn new(family: Family) -> Self {
        let fields: Vec<&'static Field> = fields::all_fields(family).collect();
        let pos = |name: &str| fields.iter().position(|f| f.name == name);
        Self {
            family,
            columns: fields.iter().map(|f| Column::for_kind(f.kind)).collect(),
            idx_event_id: pos("event_id").unwrap_or(0),
            idx_license: pos("license").unwrap_or(0),
            idx_time: pos("time").unwrap_or(0),
            idx_location: pos("location").unwrap_or(0),
            idx_state: pos("state").unwrap_or(0),
            idx_key_id: pos("key_id"),
            key_order: [u8::MAX; MAX_KEYS_REMEMBERED],
            fields,
            extra: StringBuilder::new(),
            source: StringBuilder::new(),
            line: Int64Builder::new(),
            rows: 0,
        }
    }

    fn finish(&mut self) -> Result<Option<EventBatch>, IngestError> {
        if self.rows == 0 {
            return Ok(None);
        }
        let mut arrays: Vec<ArrayRef> = self.columns.iter_mut().map(Column::finish).collect();
        arrays.push(Arc::new(self.extra.finish()));
        arrays.push(Arc::new(self.source.finish()));
        arrays.push(Arc::new(self.line.finish()));
        self.rows = 0;
        let batch = RecordBatch::try_new(event_schema(self.family), arrays)
            .map_err(|e| IngestError::Internal(format!("building the {} batch: {e}", self.family)))?;
        Ok(Some(EventBatch { family: self.family, batch }))
    }
}

/// Builders of the dead-letter table.
#[derive(Default)]
struct DeadLetterBuilder {
    id: StringBuilder,
    received_at: Option<TimestampMillisecondBuilder>,
    source: StringBuilder,
    line: Int64Builder,
    code: StringBuilder,
    reason: StringBuilder,
    family: StringBuilder,
    raw: StringBuilder,
    raw_bytes: Int64Builder,
    rows: usize,
}

impl DeadLetterBuilder {
    fn finish(&mut self) -> Result<Option<RecordBatch>, IngestError> {
        if self.rows == 0 {
            return Ok(None);
        }
        let mut received = self.received_at.take().unwrap_or_else(TimestampMillisecondBuilder::new);
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(received.finish().with_timezone("UTC")),
            Arc::new(self.source.finish()),
            Arc::new(self.line.finish()),
            Arc::new(self.code.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.family.finish()),
            Arc::new(self.raw.finish()),
            Arc::new(self.raw_bytes.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(dead_letter_schema(), arrays)
            .map(Some)
            .map_err(|e| IngestError::Internal(format!("building the dead-letter batch: {e}")))
    }
}

/// Decodes chunks of NDJSON lines into per-family Arrow batches.
pub struct Decoder {
    redactor: Redactor,
    families: [FamilyBuilder; 4],
    dead: DeadLetterBuilder,
    extra: String,
    scratch: String,
    fingerprints: RecentFingerprints,
    stats: DecodeStats,
    /// How far ahead of its arrival an event may be dated (`None`: no bound, for fixtures).
    max_clock_skew_ms: Option<i64>,
    /// The chunk's arrival time and the newest event time it may carry.
    received_at_ms: i64,
    newest_allowed_ms: i64,
    /// The operator's locations (`None`: no locations.csv, nothing checked).
    tenancy: Option<Arc<Tenancy>>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder that redacts with `redactor`.
    pub fn new(redactor: Redactor) -> Self {
        Self {
            redactor,
            families: Family::ALL.map(FamilyBuilder::new),
            dead: DeadLetterBuilder::default(),
            extra: String::new(),
            scratch: String::new(),
            fingerprints: RecentFingerprints::default(),
            stats: DecodeStats::default(),
            max_clock_skew_ms: None,
            received_at_ms: 0,
            newest_allowed_ms: i64::MAX,
            tenancy: None,
        }
    }

    /// A decoder with the same redactor and clock-skew bound and empty builders:
    /// one per chunk decoded at the same time.
    pub fn sibling(&self) -> Self {
        Self { max_clock_skew_ms: self.max_clock_skew_ms, tenancy: self.tenancy.clone(), ..Self::new(self.redactor.clone()) }
    }

    /// Dead-letter (`location_mismatch`) events whose location or state is not their
    /// license's in the operator's locations (see [`Tenancy`]).
    pub fn with_tenancy(mut self, tenancy: Arc<Tenancy>) -> Self {
        self.tenancy = Some(tenancy);
        self
    }

    /// Dead-letter (`future_time`) events dated more than `skew_ms` after the chunk's
    /// arrival (`decode_chunk`'s `received_at_ms`): event time is bounded by arrival.
    pub fn with_max_clock_skew(mut self, skew_ms: i64) -> Self {
        self.max_clock_skew_ms = Some(skew_ms.max(0));
        self
    }

    /// Decode every line of `chunk`. `received_at_ms` stamps dead letters.
    pub fn decode_chunk(&mut self, chunk: &LineChunk, received_at_ms: i64) -> Result<DecodedChunk, IngestError> {
        self.received_at_ms = received_at_ms;
        self.newest_allowed_ms = self.max_clock_skew_ms.map_or(i64::MAX, |skew| received_at_ms.saturating_add(skew));
        for span in &chunk.lines {
            let bytes = chunk.line(span);
            self.stats.lines += 1;
            self.stats.bytes += span.original_len as u64 + 1;
            if let Err(rejected) = self.decode_line(&chunk.source, span.number, bytes, span.original_len) {
                self.dead_letter(&chunk.source, span.number, bytes, span.original_len, rejected, received_at_ms);
            }
        }
        let mut events = Vec::with_capacity(4);
        for builder in &mut self.families {
            events.extend(builder.finish()?);
        }
        Ok(DecodedChunk { events, dead_letters: self.dead.finish()?, stats: std::mem::take(&mut self.stats) })
    }

    /// Dead letters for lines of `chunk` that are not for this decoder at all (a message on the
    /// dead-letter topic that is not a dead letter): each `(index into chunk.lines, code,
    /// message)` becomes a dead letter like any bad line, its text redacted, at its source and
    /// line (a topic partition and offset), so nothing read is lost and nothing stops a run.
    pub fn reject_lines(&mut self, chunk: &LineChunk, rejected: &[(usize, ReasonCode, String)], received_at_ms: i64) -> Result<DecodedChunk, IngestError> {
        for (index, code, message) in rejected {
            let Some(span) = chunk.lines.get(*index) else { continue };
            let bytes = chunk.line(span);
            self.stats.lines += 1;
            self.stats.bytes += span.original_len as u64 + 1;
            self.dead_letter(&chunk.source, span.number, bytes, span.original_len, reject(*code, message.clone()), received_at_ms);
        }
        Ok(DecodedChunk { events: Vec::new(), dead_letters: self.dead.finish()?, stats: std::mem::take(&mut self.stats) })
    }

    fn decode_line(&mut self, source: &str, number: u64, bytes: &[u8], original_len: usize) -> Result<(), Reject> {
        if original_len > MAX_LINE_BYTES {
            return Err(reject(
                ReasonCode::LineTooLong,
                format!("line is {original_len} bytes; the limit is {MAX_LINE_BYTES}"),
            ));
        }
        // SIMD validation; std's only on failure, for the position in the message.
        let text = simdutf8::basic::from_utf8(bytes).or_else(|_| std::str::from_utf8(bytes)).map_err(|e| {
            reject(ReasonCode::InvalidUtf8, format!("invalid UTF-8 at byte {}", e.valid_up_to()))
        })?;
        if text.trim().is_empty() {
            return Err(reject(ReasonCode::EmptyLine, "empty line"));
        }
        // Parsed into a buffer on this frame: returning the pairs by value moved ~1 KB
        // per line, a few percent of decoding.
        let mut pairs: Pairs<'_> = SmallVec::new();
        let mut json = serde_json::Deserializer::from_str(text);
        ObjectSeed(&mut pairs).deserialize(&mut json).and_then(|()| json.end()).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => reject(ReasonCode::NotObject, "line is JSON but not an object"),
                _ => reject(ReasonCode::NotJson, format!("not JSON: {e}")),
            }
        })?;

        let family_raw = pairs
            .iter()
            .find(|(k, _)| k == "family")
            .map(|(_, v)| *v)
            .ok_or_else(|| reject(ReasonCode::MissingField, "missing required field `family`"))?;
        let family = match json_str(family_raw.get()) {
            Some(name) => name.to_ascii_lowercase().parse::<Family>().map_err(|_| {
                reject(ReasonCode::UnknownFamily, format!("unknown family ({}; expected login, api, sync or audit)", described(&name)))
            })?,
            None => return Err(reject(ReasonCode::WrongType, "field `family` must be a string")),
        };
        let with_family = |mut r: Reject| {
            r.family = Some(family);
            r
        };

        let builder = &mut self.families[family.index()];
        let mut cells: [Cell<'_>; MAX_FIELDS] = Default::default();
        let mut seen = [false; MAX_FIELDS];
        let mut key_fingerprint: Option<(usize, String)> = None;
        let mut redacted = false;
        self.extra.clear();

        for (k, (key, raw)) in pairs.iter().enumerate() {
            if key == "family" {
                continue;
            }
            if let Some(i) = builder.field_index(k, key) {
                if seen[i] {
                    return Err(with_family(reject(ReasonCode::DuplicateField, format!("field `{key}` appears twice"))));
                }
                seen[i] = true;
                let field = builder.fields[i];
                let mut cell = parse_cell(field, raw.get()).map_err(with_family)?;
                // Only free text can carry a credential: enum and state values are static
                // spellings, IPs and times are parsed. The pre-check runs on the value, not the
                // whole line (the line's keys and fixed values are most of its bytes).
                if let (Kind::Str { .. } | Kind::Lower { .. } | Kind::Upper { .. }, Cell::Str(s)) = (field.kind, &cell) {
                    if self.redactor.might_contain_secret(s.as_bytes()) {
                        self.scratch.clear();
                        if self.redactor.redact_into(s, &mut self.scratch) {
                            cell = Cell::Str(Cow::Owned(self.scratch.clone()));
                            redacted = true;
                        }
                    }
                }
                cells[i] = cell;
            } else if let Some(secret) = crate::redact::secret_name(key) {
                // A raw credential (`api_key`, `userApiKey`, `x-api-key`, `newPassword`, ...):
                // fingerprint it, keep only the marker.
                let value = json_str(raw.get()).unwrap_or(Cow::Borrowed(raw.get()));
                let token = crate::redact::strip_auth_scheme(&value).as_bytes();
                let fingerprint = match crate::redact::existing_marker(token) {
                    Some(fp) => fp,
                    None => self.fingerprints.get(self.redactor.fingerprinter(), token),
                };
                push_extra_key(&mut self.extra, key);
                self.extra.push('"');
                crate::redact::push_marker(fingerprint, &mut self.extra);
                self.extra.push('"');
                redacted = true;
                if let crate::redact::SecretName::Key(rank) = secret {
                    if key_fingerprint.as_ref().is_none_or(|(r, _)| rank < *r) {
                        key_fingerprint = Some((rank, fingerprint.to_owned()));
                    }
                }
            } else {
                // Anything else unknown is kept in `extra`, with credentials inside it (a
                // query string, a nested object's `apiKey`) replaced.
                push_extra_key(&mut self.extra, key);
                if !self.redactor.json_might_contain_secret(raw.get().as_bytes()) {
                    self.extra.push_str(raw.get());
                } else {
                    let mark = self.extra.len();
                    match self.redactor.redact_json_into(raw.get(), &mut self.extra) {
                        Ok(changed) => redacted |= changed,
                        // Parsed once already, so this does not happen; if it did, the value
                        // is kept only as a fingerprint.
                        Err(_) => {
                            self.extra.truncate(mark);
                            self.extra.push('"');
                            self.redactor.marker_into(raw.get().as_bytes(), &mut self.extra);
                            self.extra.push('"');
                            redacted = true;
                        }
                    }
                }
            }
            if self.extra.len() > MAX_EXTRA_BYTES {
                return Err(with_family(reject(
                    ReasonCode::ExtraTooLarge,
                    format!("unknown fields exceed {MAX_EXTRA_BYTES} bytes"),
                )));
            }
        }

        // Fill what the decoder derives, then check presence.
        if matches!(cells[builder.idx_event_id], Cell::Null) {
            cells[builder.idx_event_id] = Cell::Hash(derived_event_id(source, number, bytes));
        }
        if matches!(cells[builder.idx_location], Cell::Null) {
            cells[builder.idx_location] = cells[builder.idx_license].clone();
        }
        if let (Some(i), Some((_, fp))) = (builder.idx_key_id, key_fingerprint) {
            if matches!(cells[i], Cell::Null) {
                cells[i] = Cell::Str(Cow::Owned(fp));
            }
        }
        for (i, field) in builder.fields.iter().enumerate() {
            if matches!(cells[i], Cell::Null) {
                if let Some(default) = field.default_int {
                    cells[i] = Cell::Int(default);
                } else if field.presence != Presence::Optional {
                    let hint = if field.presence == Presence::RequiredUnlessRawKey { " (or a raw api_key to fingerprint)" } else { "" };
                    return Err(with_family(reject(
                        ReasonCode::MissingField,
                        format!("missing required field `{}`{hint}", field.name),
                    )));
                }
            }
        }

        if let Cell::Time(ms) = cells[builder.idx_time] {
            if ms > self.newest_allowed_ms {
                // A clock years ahead would drag every watermark with it: one such line used to
                // age every absence key by decades and leave a whole run without findings.
                return Err(with_family(reject(
                    ReasonCode::FutureTime,
                    format!(
                        "field `time` is {} s ahead of its arrival, more than the allowed clock skew of {} s",
                        (ms - self.received_at_ms) / 1000,
                        self.max_clock_skew_ms.unwrap_or(0) / 1000
                    ),
                )));
            }
        }

        if let Some(tenancy) = &self.tenancy {
            let text = |i: usize| if let Cell::Str(s) = &cells[i] { s.as_ref() } else { "" };
            tenancy.check(text(builder.idx_license), text(builder.idx_location), text(builder.idx_state)).map_err(|why| with_family(reject(ReasonCode::LocationMismatch, why)))?;
        }

        let builder = &mut self.families[family.index()];
        for (column, cell) in builder.columns.iter_mut().zip(cells.iter()) {
            column.append(cell);
        }
        if self.extra.is_empty() {
            builder.extra.append_null();
        } else {
            self.extra.push('}');
            builder.extra.append_value(&self.extra);
        }
        builder.source.append_value(source);
        builder.line.append_value(number as i64);
        builder.rows += 1;
        self.stats.events[family.index()] += 1;
        if redacted {
            self.stats.redacted += 1;
        }
        Ok(())
    }

    fn dead_letter(&mut self, source: &str, number: u64, bytes: &[u8], original_len: usize, r: Reject, received_at_ms: i64) {
        let keep = &bytes[..bytes.len().min(MAX_DEAD_LETTER_RAW_BYTES)];
        let text = String::from_utf8_lossy(keep);
        let raw = self.redactor.redact_line(&text);
        let mut id = xxhash_rust::xxh3::Xxh3::new();
        id.update(source.as_bytes());
        id.update(&number.to_le_bytes());
        id.update(bytes);
        let dead = &mut self.dead;
        let _ = write!(dead.id, "{:032x}", id.digest128());
        dead.id.append_value("");
        dead.received_at.get_or_insert_with(TimestampMillisecondBuilder::new).append_value(received_at_ms);
        dead.source.append_value(source);
        dead.line.append_value(number as i64);
        dead.code.append_value(r.code.as_str());
        dead.reason.append_value(&r.message);
        dead.family.append_option(r.family.map(Family::as_str));
        dead.raw.append_value(truncate_at_char(&raw, MAX_DEAD_LETTER_RAW_BYTES));
        dead.raw_bytes.append_value(original_len as i64);
        dead.rows += 1;
        if let Some(i) = ReasonCode::ALL.iter().position(|c| *c == r.code) {
            self.stats.dead[i] += 1;
        }
    }
}

/// Fingerprints of the raw credentials seen lately. An integration sends its key
/// on every request, and an HMAC per line was a few percent of decoding. The raw
/// keys stay in this decoder's memory only (as the lines themselves do).
#[derive(Default)]
struct RecentFingerprints(HashMap<Box<[u8]>, [u8; 16]>);

/// Credentials remembered per decoder; the map is emptied when it is full.
const RECENT_FINGERPRINTS: usize = 4096;

impl RecentFingerprints {
    /// The 16-hex-character fingerprint of `token`.
    fn get(&mut self, fingerprinter: &Fingerprinter, token: &[u8]) -> &str {
        if !self.0.contains_key(token) {
            if self.0.len() >= RECENT_FINGERPRINTS {
                self.0.clear();
            }
            self.0.insert(token.into(), fingerprinter.fingerprint_hex(token));
        }
        self.0.get(token).and_then(|hex| std::str::from_utf8(hex).ok()).unwrap_or_default()
    }
}

fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn push_extra_key(extra: &mut String, key: &str) {
    extra.push(if extra.is_empty() { '{' } else { ',' });
    // serde_json escapes exactly as JSON needs; keys are short.
    let _ = serde_json::to_writer(string_writer(extra), key);
    extra.push(':');
}

/// `serde_json::to_writer` wants `io::Write`; this adapter appends UTF-8 to a String.
fn string_writer(s: &mut String) -> impl std::io::Write + '_ {
    struct W<'a>(&'a mut String);
    impl std::io::Write for W<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let text = std::str::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            self.0.push_str(text);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    W(s)
}

/// A rejected value as a reason names it: by its size, never its text. The reason is stored
/// and shown apart from the line (whose copy is redacted), and a credential sent in the wrong
/// field (a key in `ip`) must not reach it.
fn described(value: &str) -> String {
    match value.chars().count() {
        1 => "1 character".to_string(),
        n => format!("{n} characters"),
    }
}

/// The contents of a JSON string literal, borrowed when it has no escapes.
fn json_str(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// Why a value is not an integer.
enum NumberProblem {
    NotANumber,
    Fraction,
    OutOfRange,
}

/// `text` as an i64: `48000` and `48000.0` (how Python and JavaScript exports write
/// whole numbers) are both 48000, as JSON Schema's `integer` has it; a fraction, a
/// value past 64 bits (`1e400`, twenty digits) or `NaN` in a string is refused.
fn whole_number(text: &str) -> Result<i64, NumberProblem> {
    if let Ok(value) = text.parse::<i64>() {
        return Ok(value);
    }
    let value: f64 = text.parse().map_err(|_| NumberProblem::NotANumber)?;
    if value.is_nan() {
        return Err(NumberProblem::NotANumber);
    }
    // 2^63 is the first f64 past i64::MAX.
    if !value.is_finite() || value.abs() >= 9_223_372_036_854_775_808.0 {
        return Err(NumberProblem::OutOfRange);
    }
    if value.fract() != 0.0 {
        return Err(NumberProblem::Fraction);
    }
    Ok(value as i64)
}

fn json_type(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        _ => "a number",
    }
}

fn parse_cell<'a>(field: &Field, raw: &'a str) -> Result<Cell<'a>, Reject> {
    if raw == "null" {
        return Ok(Cell::Null);
    }
    let name = field.name;
    let wrong = |expected: &str| {
        reject(ReasonCode::WrongType, format!("field `{name}` must be {expected}, got {}", json_type(raw)))
    };
    let string = || json_str(raw).ok_or_else(|| wrong("a string"));
    let non_empty = |s: Cow<'a, str>, max_len: usize| -> Result<Cow<'a, str>, Reject> {
        if s.is_empty() {
            return Err(reject(ReasonCode::InvalidValue, format!("field `{name}` is empty")));
        }
        if s.len() > max_len {
            return Err(reject(
                ReasonCode::InvalidValue,
                format!("field `{name}` is {} bytes; the limit is {max_len}", s.len()),
            ));
        }
        Ok(s)
    };
    match field.kind {
        Kind::Str { max_len } => Ok(Cell::Str(non_empty(string()?, max_len)?)),
        Kind::Lower { max_len } => {
            let s = non_empty(string()?, max_len)?;
            Ok(Cell::Str(if s.bytes().any(|b| b.is_ascii_uppercase()) { Cow::Owned(s.to_ascii_lowercase()) } else { s }))
        }
        Kind::Upper { max_len } => {
            let s = non_empty(string()?, max_len)?;
            Ok(Cell::Str(if s.bytes().any(|b| b.is_ascii_lowercase()) { Cow::Owned(s.to_ascii_uppercase()) } else { s }))
        }
        Kind::Enum(values) => {
            let s = string()?;
            match values.iter().find(|v| v.eq_ignore_ascii_case(&s)) {
                Some(v) => Ok(Cell::Str(Cow::Borrowed(v))),
                None => {
                    let code = if name == "action" { ReasonCode::UnknownAction } else { ReasonCode::InvalidValue };
                    Err(reject(code, format!("field `{name}` has an unknown value ({}; expected one of {})", described(&s), values.join(", "))))
                }
            }
        }
        Kind::State => {
            let s = string()?;
            match STATE_CODES.iter().find(|v| v.eq_ignore_ascii_case(&s)) {
                Some(v) => Ok(Cell::Str(Cow::Borrowed(v))),
                None => Err(reject(ReasonCode::InvalidValue, format!("field `state` has an unknown code ({})", described(&s)))),
            }
        }
        Kind::Int { min, max } => {
            let number = if raw.starts_with('"') { whole_number(string()?.trim()) } else { whole_number(raw) };
            let value = match number {
                Ok(value) => value,
                Err(NumberProblem::NotANumber) => return Err(wrong("an integer")),
                Err(NumberProblem::Fraction) => return Err(reject(ReasonCode::WrongType, format!("field `{name}` must be a whole number, got a fraction"))),
                Err(NumberProblem::OutOfRange) => return Err(reject(ReasonCode::InvalidValue, format!("field `{name}` is beyond the 64-bit integer range"))),
            };
            if value < min || value > max {
                return Err(reject(ReasonCode::InvalidValue, format!("field `{name}` is {value}, outside {min}..={max}")));
            }
            Ok(Cell::Int(value))
        }
        Kind::Bool => match raw {
            "true" => Ok(Cell::Bool(true)),
            "false" => Ok(Cell::Bool(false)),
            _ => Err(wrong("true or false")),
        },
        Kind::Ip => {
            let s = string()?;
            let ip: IpAddr = s
                .trim()
                .parse()
                .map_err(|_| reject(ReasonCode::InvalidIp, format!("field `{name}` is not an IP address ({})", described(&s))))?;
            // Rust's IPv4 parser rejects leading zeros, so a parsed IPv4 string is canonical.
            Ok(Cell::Str(match ip {
                IpAddr::V4(_) if s.len() == s.trim().len() => s,
                IpAddr::V4(v4) => Cow::Owned(v4.to_string()),
                IpAddr::V6(v6) => Cow::Owned(match v6.to_ipv4_mapped() {
                    Some(v4) => v4.to_string(),
                    None => v6.to_string(),
                }),
            }))
        }
        Kind::Time => {
            let ms = if raw.starts_with('"') {
                let s = json_str(raw).unwrap_or_default();
                chrono::DateTime::parse_from_rfc3339(s.trim())
                    .map_err(|e| {
                        reject(ReasonCode::BadTime, format!("field `time` is not RFC 3339 with an offset ({}: {e})", described(&s)))
                    })?
                    .timestamp_millis()
            } else {
                raw.parse::<i64>().map_err(|_| {
                    reject(ReasonCode::BadTime, format!("field `time` must be an RFC 3339 string or epoch milliseconds, got {}", json_type(raw)))
                })?
            };
            if !(MIN_TIME_MS..MAX_TIME_MS).contains(&ms) {
                return Err(reject(
                    ReasonCode::BadTime,
                    format!("field `time` is {ms} ms since the epoch, outside 2000..2100 (epoch seconds instead of milliseconds?)"),
                ));
            }
            Ok(Cell::Time(ms))
        }
    }
}

/// The id of an event that names none: its content and its position in its source (file
/// and line, or topic/partition and offset). Two identical lines (a burst of 401s within a
/// second) are two events; the same line read again (a restarted run, a resent chunk) is
/// the same one, and the archive keeps it once. The collector stamps this id into what it
/// produces, so the events a detector reads from Kafka keep their file positions' ids.
pub fn derived_event_id(source: &str, number: u64, bytes: &[u8]) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(source.as_bytes());
    h.update(&[0]);
    h.update(&number.to_le_bytes());
    h.update(bytes);
    h.digest128()
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;

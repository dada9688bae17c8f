//! Secret redaction: raw credentials never reach a table, a topic or a dead letter.
//!
//! A raw value is replaced by `[redacted:<fingerprint>]`, where the fingerprint
//! is HMAC-SHA256 of the value under a local secret, cut to 16 hex characters:
//! stable (the same key always maps to the same `key_id`, so detectors can
//! follow it) and useless to anyone without the local secret.

use std::fs;
use std::io::Write;
use std::path::Path;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::IngestError;

/// Bytes of the local fingerprint secret.
const KEY_BYTES: usize = 32;

/// Computes keyed fingerprints of secret values.
#[derive(Clone)]
pub struct Fingerprinter {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprinter { .. }")
    }
}

impl Fingerprinter {
    /// A fingerprinter keyed with `secret` (at least 16 bytes).
    pub fn new(secret: &[u8]) -> Result<Self, IngestError> {
        if secret.len() < 16 {
            return Err(IngestError::FingerprintKey {
                path: String::new(),
                message: "the fingerprint secret must be at least 16 bytes".into(),
            });
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| IngestError::FingerprintKey {
            path: String::new(),
            message: e.to_string(),
        })?;
        Ok(Self { mac })
    }

    /// Load the secret from `path`, creating a random one (mode 0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, IngestError> {
        let err = |message: String| IngestError::FingerprintKey { path: path.display().to_string(), message };
        let secret = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; KEY_BYTES];
                getrandom::fill(&mut secret).map_err(|e| err(e.to_string()))?;
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                }
                let mut options = fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).map_err(|e| err(e.to_string()))?;
                file.write_all(&secret).and_then(|()| file.sync_all()).map_err(|e| err(e.to_string()))?;
                tracing::info!(path = %path.display(), "created a new fingerprint secret");
                secret.to_vec()
            }
            Err(e) => return Err(err(e.to_string())),
        };
        Self::new(&secret).map_err(|_| err("the file must hold at least 16 bytes".into()))
    }

    /// The 16-hex-character fingerprint of `value`, written into `out`.
    pub fn fingerprint_into(&self, value: &[u8], out: &mut String) {
        out.extend(self.fingerprint_hex(value).iter().map(|&b| b as char));
    }

    /// The fingerprint of `value` as 16 ASCII hex digits.
    pub fn fingerprint_hex(&self, value: &[u8]) -> [u8; 16] {
        let mut mac = self.mac.clone();
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        let mut hex = [b'0'; 16];
        // 8 bytes -> 16 hex digits; hex::encode_to_slice only fails on a size mismatch.
        let _ = hex::encode_to_slice(&digest[..8], &mut hex);
        hex
    }

    /// The fingerprint of `value` as a new string.
    pub fn fingerprint(&self, value: &[u8]) -> String {
        let mut out = String::with_capacity(16);
        self.fingerprint_into(value, &mut out);
        out
    }
}

/// The fingerprint inside `value` when it already is a marker
/// (`[redacted:<16 hex>]`, as a collector upstream wrote it): such values are
/// kept, not fingerprinted again, so a line redacted before Kafka decodes to
/// the same key fingerprint as the raw line would have.
pub fn existing_marker(value: &[u8]) -> Option<&str> {
    let inner = value.strip_prefix(b"[redacted:")?.strip_suffix(b"]")?;
    (inner.len() == 16 && inner.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))).then(|| std::str::from_utf8(inner).ok()).flatten()
}

/// Append the marker `[redacted:<fingerprint>]` to `out`.
pub fn push_marker(fingerprint: &str, out: &mut String) {
    out.push_str("[redacted:");
    out.push_str(fingerprint);
    out.push(']');
}

/// Names whose values are credentials wherever they appear in text
/// (JSON keys, `name=value` query strings, `Name: value` headers).
const TEXT_SECRET_NAMES: &[&str] = &[
    "api_key",
    "user_key",
    "vendor_key",
    "password",
    "authorization",
    "apikey",
    "api-key",
    "access_token",
];

/// Finds and replaces credential values in free text.
#[derive(Debug, Clone)]
pub struct Redactor {
    names: AhoCorasick,
    fingerprinter: Fingerprinter,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl Redactor {
    /// A redactor whose markers carry fingerprints from `fingerprinter`.
    pub fn new(fingerprinter: Fingerprinter) -> Result<Self, IngestError> {
        let names = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(TEXT_SECRET_NAMES)
            .map_err(|e| IngestError::Internal(e.to_string()))?;
        Ok(Self { names, fingerprinter })
    }

    /// The fingerprinter behind the markers.
    pub fn fingerprinter(&self) -> &Fingerprinter {
        &self.fingerprinter
    }

    /// Cheap pre-check: could `text` hold a credential at all? A credential in text is
    /// always a name followed by `:` or `=` (see `value_span`), so text without either
    /// (most values: names, paths, licenses) is answered by one SIMD scan.
    pub fn might_contain_secret(&self, text: &[u8]) -> bool {
        memchr::memchr2(b':', b'=', text).is_some() && self.names.is_match(text)
    }

    /// Append `[redacted:<fp>]` for `value` to `out`.
    pub fn marker_into(&self, value: &[u8], out: &mut String) {
        let hex;
        let fingerprint = match existing_marker(value) {
            Some(fp) => fp,
            None => {
                hex = self.fingerprinter.fingerprint_hex(value);
                std::str::from_utf8(&hex).unwrap_or_default()
            }
        };
        push_marker(fingerprint, out);
    }

    /// Copy `text` into `out` with every credential value replaced by a marker.
    /// Returns whether anything was replaced.
    pub fn redact_into(&self, text: &str, out: &mut String) -> bool {
        let bytes = text.as_bytes();
        let mut copied = 0;
        let mut changed = false;
        for m in self.names.find_iter(bytes) {
            if m.start() < copied {
                continue;
            }
            let before_ok = m.start() == 0 || !is_ident(bytes[m.start() - 1]);
            let after_ok = m.end() == bytes.len() || !is_ident(bytes[m.end()]);
            if !before_ok || !after_ok {
                continue;
            }
            if let Some((start, end)) = value_span(bytes, m.end()) {
                out.push_str(&text[copied..start]);
                self.marker_into(&bytes[start..end], out);
                copied = end;
                changed = true;
            }
        }
        out.push_str(&text[copied..]);
        changed
    }

    /// `text` with credentials replaced (allocates; for cold paths such as dead letters).
    pub fn redact(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        self.redact_into(text, &mut out);
        out
    }
}

/// After a secret's name ending at `i`, find the value it is given: skip a
/// closing quote (plain or escaped), white space, `:` or `=`, white space and an
/// opening quote; the value runs to the closing quote, or for unquoted values
/// to a delimiter. An auth scheme (`Bearer`, `Basic`) belongs to the value.
fn value_span(b: &[u8], mut i: usize) -> Option<(usize, usize)> {
    let skip_ws = |mut i: usize| {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        i
    };
    if b.get(i) == Some(&b'\\') && b.get(i + 1) == Some(&b'"') {
        i += 2;
    } else if matches!(b.get(i), Some(b'"') | Some(b'\'')) {
        i += 1;
    }
    i = skip_ws(i);
    if !matches!(b.get(i), Some(b':') | Some(b'=')) {
        return None;
    }
    i = skip_ws(i + 1);
    let escaped_quote = b.get(i) == Some(&b'\\') && b.get(i + 1) == Some(&b'"');
    let quote = if escaped_quote {
        i += 2;
        Some(b'"')
    } else if let Some(&q @ (b'"' | b'\'')) = b.get(i) {
        i += 1;
        Some(q)
    } else {
        None
    };
    let start = i;
    let mut end = i;
    match quote {
        Some(q) => {
            while end < b.len() {
                if b[end] == b'\\' && !escaped_quote {
                    end += 2;
                    continue;
                }
                if b[end] == q || (escaped_quote && b[end] == b'\\') {
                    break;
                }
                end += 1;
            }
            end = end.min(b.len());
        }
        None => {
            // "Bearer <token>": keep going past the scheme to the token.
            let rest = &b[start..];
            for scheme in [&b"bearer "[..], &b"basic "[..], &b"token "[..]] {
                if rest.len() > scheme.len() && rest[..scheme.len()].eq_ignore_ascii_case(scheme) {
                    end += scheme.len();
                    break;
                }
            }
            while end < b.len() && !matches!(b[end], b' ' | b'\t' | b',' | b'}' | b'&' | b';' | b'"' | b'\\' | b'\n' | b'\r') {
                end += 1;
            }
        }
    }
    (end > start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(Fingerprinter::new(b"0123456789abcdef0123").unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn redacts_json_query_string_and_header_forms() {
        let r = redactor();
        let cases = [
            r#"{"api_key":"sk_live_AAA","user":"x"}"#,
            r#"{"API_KEY" : "sk_live_AAA"}"#,
            "GET /packages?licenseNumber=1&api_key=sk_live_AAA&x=1",
            "Authorization: Bearer sk_live_AAA",
            r#"{"extra":"{\"password\":\"sk_live_AAA\"}"}"#,
            "password='sk_live_AAA'",
        ];
        for case in cases {
            let out = r.redact(case);
            assert!(!out.contains("sk_live_AAA"), "{case} -> {out}");
            assert!(out.contains("[redacted:"), "{case} -> {out}");
        }
    }

    /// The pre-check may say yes wrongly, never no: every text redaction changes passes it.
    #[test]
    fn the_pre_check_passes_everything_redaction_changes() {
        let r = redactor();
        let names = TEXT_SECRET_NAMES.iter().flat_map(|n| [n.to_string(), n.to_ascii_uppercase()]);
        let mut changed = 0;
        for name in names {
            for glue in ["=", ":", " = ", "\":\"", "' : '", "\\\":\\\"", " ", ""] {
                for value in ["sk_live_AAA", "Bearer sk_live_AAA", ""] {
                    let text = format!("x {name}{glue}{value} y");
                    let redacted = r.redact(&text) != text;
                    changed += usize::from(redacted);
                    assert!(!redacted || r.might_contain_secret(text.as_bytes()), "pre-check missed {text}");
                }
            }
        }
        assert!(changed > 100, "only {changed} of the texts were redacted: the test no longer covers the forms");
        assert!(!r.might_contain_secret(b"/packages/v2/api_key/active"), "no `:` or `=`, so no value to redact");
    }

    #[test]
    fn leaves_lookalike_names_and_plain_text_alone() {
        let r = redactor();
        for case in [r#"{"api_key_id":"k1"}"#, "no secrets here", r#"{"key_id":"abc"}"#, "password reset requested"] {
            assert_eq!(r.redact(case), case);
        }
    }

    #[test]
    fn fingerprints_are_stable_and_keyed() {
        let a = Fingerprinter::new(b"0123456789abcdef").unwrap_or_else(|e| panic!("{e}"));
        let b = Fingerprinter::new(b"fedcba9876543210").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.fingerprint(b"k"), a.fingerprint(b"k"));
        assert_ne!(a.fingerprint(b"k"), b.fingerprint(b"k"));
        assert_eq!(a.fingerprint(b"k").len(), 16);
    }

    #[test]
    fn secret_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("sub/fp.key");
        let first = Fingerprinter::load_or_create(&path).unwrap_or_else(|e| panic!("{e}"));
        let second = Fingerprinter::load_or_create(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.fingerprint(b"x"), second.fingerprint(b"x"));
    }
}

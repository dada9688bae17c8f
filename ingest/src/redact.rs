//! Secret redaction: raw credentials never reach a table, a topic or a dead letter.
//!
//! A raw value is replaced by `[redacted:<fingerprint>]`, where the fingerprint
//! is HMAC-SHA256 of the value under a local secret, cut to 16 hex characters:
//! stable (the same key always maps to the same `key_id`, so detectors can
//! follow it) and useless to anyone without the local secret.

use std::borrow::Cow;
use std::fs;
use std::io::Write;
use std::path::Path;

use hmac::{Hmac, Mac};
use seedwatch_schemas::fields::KEY_FIELDS;
use serde::de::DeserializeSeed;
use serde_json::value::RawValue;
use smallvec::SmallVec;
use sha2::Sha256;

use crate::json::{ObjectSeed, Pairs};
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

    /// Load the secret from `path`, creating a random one (mode 0600) when the file does not
    /// exist: for `run`, a single process. Daemons use [`Fingerprinter::load`].
    pub fn load_or_create(path: &Path) -> Result<Self, IngestError> {
        match Self::create(path) {
            Ok(created) => Ok(created),
            Err(_) if path.exists() => Self::load(path),
            Err(e) => Err(e),
        }
    }

    /// Load the secret from `path`, which must exist and be readable by its owner only. A
    /// collector or detector that made its own would give one API key a different `key_id`
    /// on each host, so a missing file is an error naming `seedwatch keys init`.
    pub fn load(path: &Path) -> Result<Self, IngestError> {
        let err = |message: String| IngestError::FingerprintKey { path: path.display().to_string(), message };
        match fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(err(
                    "no such file: create it once with `seedwatch keys init --fingerprint-key FILE` and give every collector and detector the same file (one made per host would give a key a different key_id on each)".into(),
                ))
            }
            Err(e) => return Err(err(e.to_string())),
        };
        if let Some(why) = seedwatch_schemas::secret_file::exposure(path).map_err(|e| err(e.to_string()))? {
            return Err(err(format!("{why} the secret; chmod 600 it")));
        }
        let secret = fs::read(path).map_err(|e| err(e.to_string()))?;
        Self::new(&secret).map_err(|_| err("the file must hold at least 16 bytes".into()))
    }

    /// Create a new random secret at `path` (mode 0600); an existing file is never replaced.
    pub fn create(path: &Path) -> Result<Self, IngestError> {
        let err = |message: String| IngestError::FingerprintKey { path: path.display().to_string(), message };
        let mut secret = [0u8; KEY_BYTES];
        getrandom::fill(&mut secret).map_err(|e| err(e.to_string()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| err(e.to_string()))?;
        file.write_all(&secret).and_then(|()| file.sync_all()).map_err(|e| err(e.to_string()))?;
        tracing::info!(path = %path.display(), "created a new fingerprint secret");
        Self::new(&secret)
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

/// Last words of a name that mark its value as a credential (compared without case):
/// `api_key`, `userApiKey`, `x-api-key`, `newPassword`, `access_token`, `client_secret`,
/// `Authorization`. The last word decides, so `key_id` and `api_key_id` are not secrets.
const SECRET_WORDS: &[&str] =
    &["key", "apikey", "token", "secret", "password", "passwd", "pwd", "passphrase", "authorization", "auth", "credential", "credentials"];

/// Endings that mark a one-word name written without separators (`apikey`, `accesstoken`,
/// `newpassword`, `clientsecret`).
const SECRET_ENDINGS: &[&str] = &["apikey", "accesskey", "secretkey", "privatekey", "token", "secret", "password", "passwd"];

/// What a member, parameter or header name says about its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretName {
    /// A key an integration authenticates with: its fingerprint is the event's `key_id`.
    /// The number is the name's rank in [`KEY_FIELDS`] (the first present wins).
    Key(usize),
    /// Any other credential: a password, a token, a secret.
    Other,
}

/// Whether `name` names a credential, after the forms people write it in: any case, words
/// split by `_`, `-`, `.`, spaces or camelCase, a prefix (`x_`, `new`, `vendor`) in front.
pub fn secret_name(name: &str) -> Option<SecretName> {
    let word = last_word(name.as_bytes());
    // Most names fail on their last letter (the collector asks for every member of a line).
    if !word.last().is_some_and(|b| matches!(b.to_ascii_lowercase(), b'y' | b'n' | b't' | b'd' | b'e' | b'h' | b'l' | b's')) {
        return None;
    }
    let is_secret = SECRET_WORDS.iter().any(|w| word.eq_ignore_ascii_case(w.as_bytes()))
        || SECRET_ENDINGS.iter().any(|e| word.len() >= e.len() && word[word.len() - e.len()..].eq_ignore_ascii_case(e.as_bytes()));
    if !is_secret {
        return None;
    }
    // The key names the event contract knows, in any spelling (`apiKey`, `X-Api-Key`).
    const KEY_SPELLINGS: [(&str, &str); 6] =
        [("api_key", "apikey"), ("api_key", "xapikey"), ("user_key", "userkey"), ("user_key", "userapikey"), ("vendor_key", "vendorkey"), ("vendor_key", "vendorapikey")];
    let rank = |field: &str| KEY_FIELDS.iter().position(|k| *k == field);
    let key = if same_letters(name, "authorization") {
        rank("authorization")
    } else {
        KEY_SPELLINGS.iter().find(|(_, spelling)| same_letters(name, spelling)).and_then(|(field, _)| rank(field))
    };
    Some(key.map_or(SecretName::Other, SecretName::Key))
}

/// The last word of a name: the trailing run of lower-case letters and digits with the capital
/// before it (`Key` of `userApiKey`), or a trailing all-capitals run (`APIKEY`).
fn last_word(name: &[u8]) -> &[u8] {
    let end = name.len();
    let mut start = end;
    while start > 0 && (name[start - 1].is_ascii_lowercase() || name[start - 1].is_ascii_digit()) {
        start -= 1;
    }
    if start == end {
        while start > 0 && (name[start - 1].is_ascii_uppercase() || name[start - 1].is_ascii_digit()) {
            start -= 1;
        }
    } else if start > 0 && name[start - 1].is_ascii_uppercase() {
        start -= 1;
    }
    &name[start..end]
}

/// `name` equals `letters` ignoring case and anything not a letter or digit.
fn same_letters(name: &str, letters: &str) -> bool {
    name.bytes().filter(u8::is_ascii_alphanumeric).map(|b| b.to_ascii_lowercase()).eq(letters.bytes())
}

/// Finds and replaces credential values in free text and in JSON.
#[derive(Debug, Clone)]
pub struct Redactor {
    fingerprinter: Fingerprinter,
}

/// Characters of a name in free text (`X-Api-Key`, `api_key`, `client.secret`).
fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// The name that ends right before the delimiter at `at` (`:` or `=`), past white space and a
/// closing quote (plain or escaped, as in JSON inside a string).
fn name_before(b: &[u8], at: usize) -> &[u8] {
    let mut end = at;
    while end > 0 && matches!(b[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    if end > 0 && matches!(b[end - 1], b'"' | b'\'') {
        end -= 1;
        if end > 0 && b[end - 1] == b'\\' {
            end -= 1;
        }
    }
    let mut start = end;
    while start > 0 && is_name_char(b[start - 1]) {
        start -= 1;
    }
    &b[start..end]
}

/// Whether the name before the delimiter at `at` names a credential.
fn secret_before(b: &[u8], at: usize) -> bool {
    let name = name_before(b, at);
    // Names are ASCII by construction (see `is_name_char`).
    !name.is_empty() && std::str::from_utf8(name).is_ok_and(|n| secret_name(n).is_some())
}

/// An auth scheme in front of a token (`Bearer xyz`): it stays readable, only the token is
/// fingerprinted, so a key has one fingerprint with or without its scheme.
const AUTH_SCHEMES: [&str; 3] = ["bearer ", "basic ", "token "];

/// The length of the auth scheme (and the spaces after it) at the start of `value`, if any.
fn scheme_len(value: &[u8]) -> usize {
    for scheme in AUTH_SCHEMES {
        if value.len() > scheme.len() && value[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes()) {
            let mut n = scheme.len();
            while n < value.len() && value[n] == b' ' {
                n += 1;
            }
            return n;
        }
    }
    0
}

/// `value` without a leading auth scheme.
pub fn strip_auth_scheme(value: &str) -> &str {
    &value[scheme_len(value.as_bytes())..]
}

impl Redactor {
    /// A redactor whose markers carry fingerprints from `fingerprinter`.
    pub fn new(fingerprinter: Fingerprinter) -> Self {
        Self { fingerprinter }
    }

    /// The fingerprinter behind the markers.
    pub fn fingerprinter(&self) -> &Fingerprinter {
        &self.fingerprinter
    }

    /// Cheap pre-check: could free `text` hold a credential at all? A credential in text is
    /// always a credential's name followed by `:` or `=` (see `value_after`), so text without
    /// either (most values: names, paths, licenses) is answered by one SIMD scan.
    pub fn might_contain_secret(&self, text: &[u8]) -> bool {
        memchr::memchr2_iter(b':', b'=', text).any(|at| secret_before(text, at))
    }

    /// The same pre-check for JSON text, whose escapes (`\u0026`, `\"`) could hide a name
    /// from a scan of the raw text: any backslash sends it to [`Redactor::redact_json_into`].
    pub fn json_might_contain_secret(&self, json: &[u8]) -> bool {
        memchr::memchr(b'\\', json).is_some() || self.might_contain_secret(json)
    }

    /// Append `[redacted:<fp>]` for `value` to `out` (a marker already is kept as it is).
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

    /// Copy free `text` into `out` with every credential value replaced by a marker.
    /// Returns whether anything was replaced.
    pub fn redact_into(&self, text: &str, out: &mut String) -> bool {
        let bytes = text.as_bytes();
        let mut copied = 0;
        let mut changed = false;
        for at in memchr::memchr2_iter(b':', b'=', bytes) {
            if at < copied || !secret_before(bytes, at) {
                continue;
            }
            if let Some((start, end)) = value_after(bytes, at) {
                let token = start + scheme_len(&bytes[start..end]);
                if token == end {
                    continue;
                }
                out.push_str(&text[copied..token]);
                self.marker_into(&bytes[token..end], out);
                copied = end;
                changed = true;
            }
        }
        out.push_str(&text[copied..]);
        changed
    }

    /// `text` with credentials replaced (allocates; for cold paths).
    pub fn redact(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        self.redact_into(text, &mut out);
        out
    }

    /// A whole line as it may be stored or sent on: a JSON object is redacted member by member
    /// ([`Redactor::redact_json_into`], so escapes and nesting hide nothing), anything else as
    /// free text. Borrowed when nothing was replaced.
    pub fn redact_line<'a>(&self, line: &'a str) -> Cow<'a, str> {
        if !self.json_might_contain_secret(line.as_bytes()) {
            return Cow::Borrowed(line);
        }
        let mut out = String::with_capacity(line.len() + 16);
        match self.redact_json_into(line.trim(), &mut out) {
            Ok(true) => Cow::Owned(out),
            Ok(false) => Cow::Borrowed(line),
            // Not JSON (a dead letter's text): the free-text rules.
            Err(_) => {
                out.clear();
                if self.redact_into(line, &mut out) {
                    Cow::Owned(out)
                } else {
                    Cow::Borrowed(line)
                }
            }
        }
    }

    /// Write the JSON value `json` to `out` with every member named as a credential (at any
    /// depth, see [`secret_name`]) replaced by a marker of its value, and every string redacted
    /// as free text after its escapes are decoded. Members keep their order. Returns whether
    /// anything was replaced; an error when `json` is not JSON.
    pub fn redact_json_into(&self, json: &str, out: &mut String) -> Result<bool, serde_json::Error> {
        let json = json.trim();
        match json.as_bytes().first() {
            Some(b'{') => {
                let mut members: Pairs<'_> = SmallVec::new();
                let mut de = serde_json::Deserializer::from_str(json);
                ObjectSeed(&mut members).deserialize(&mut de).and_then(|()| de.end())?;
                let mut changed = false;
                out.push('{');
                for (i, (name, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_json_string(name, out);
                    out.push(':');
                    if secret_name(name).is_some() {
                        out.push('"');
                        self.credential_marker_into(value.get(), out);
                        out.push('"');
                        changed = true;
                    } else {
                        changed |= self.redact_json_into(value.get(), out)?;
                    }
                }
                out.push('}');
                Ok(changed)
            }
            Some(b'[') => {
                let items: Vec<&RawValue> = serde_json::from_str(json)?;
                let mut changed = false;
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    changed |= self.redact_json_into(item.get(), out)?;
                }
                out.push(']');
                Ok(changed)
            }
            Some(b'"') => {
                let text: Cow<'_, str> = serde_json::from_str(json)?;
                let mut redacted = String::new();
                if self.might_contain_secret(text.as_bytes()) && self.redact_into(&text, &mut redacted) {
                    push_json_string(&redacted, out);
                    return Ok(true);
                }
                out.push_str(json);
                Ok(false)
            }
            _ => {
                serde_json::from_str::<&RawValue>(json)?;
                out.push_str(json);
                Ok(false)
            }
        }
    }

    /// The marker of a credential member's raw JSON value: a string's text without its auth
    /// scheme (the fingerprint the decoder gives the same key), anything else as written.
    pub fn credential_marker_into(&self, raw: &str, out: &mut String) {
        match serde_json::from_str::<Cow<'_, str>>(raw) {
            Ok(text) => self.marker_into(strip_auth_scheme(&text).as_bytes(), out),
            Err(_) => self.marker_into(raw.as_bytes(), out),
        }
    }
}

/// Append `text` as a JSON string literal.
fn push_json_string(text: &str, out: &mut String) {
    // Writing JSON into a String cannot fail.
    if let Ok(quoted) = serde_json::to_string(text) {
        out.push_str(&quoted);
    }
}

/// After a credential's delimiter at `at` (`:` or `=`), find the value it is given: skip
/// white space and an opening quote (plain or escaped); the value runs to the closing quote,
/// or for unquoted values to a delimiter. An auth scheme (`Bearer`, `Basic`) is part of it.
fn value_after(b: &[u8], at: usize) -> Option<(usize, usize)> {
    let skip_ws = |mut i: usize| {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        i
    };
    let mut i = skip_ws(at + 1);
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
            end += scheme_len(&b[start..]);
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
        Redactor::new(Fingerprinter::new(b"0123456789abcdef0123").unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn redacts_json_query_string_and_header_forms() {
        let r = redactor();
        let cases = [
            r#"{"api_key":"sk_live_AAA","user":"x"}"#,
            r#"{"API_KEY" : "sk_live_AAA"}"#,
            "GET /packages?licenseNumber=1&api_key=sk_live_AAA&x=1",
            "GET /packages?licenseNumber=1&userApiKey=sk_live_AAA",
            "GET /packages?x_api_key=sk_live_AAA",
            // A Go client's JSON escapes `&` in a query string: the raw text still names it.
            r#"GET /packages?licenseNumber=1\u0026api_key=sk_live_AAA"#,
            "Authorization: Bearer sk_live_AAA",
            "X-Api-Key: sk_live_AAA",
            r#"{"extra":"{\"password\":\"sk_live_AAA\"}"}"#,
            r#"{"newPassword":"sk_live_AAA"}"#,
            "password='sk_live_AAA'",
            "client_secret=sk_live_AAA",
        ];
        for case in cases {
            assert!(r.might_contain_secret(case.as_bytes()), "{case}");
            let out = r.redact(case);
            assert!(!out.contains("sk_live_AAA"), "{case} -> {out}");
            assert!(out.contains("[redacted:"), "{case} -> {out}");
        }
    }

    #[test]
    fn credential_names_in_the_forms_people_write_them() {
        for name in [
            "api_key", "API_KEY", "apiKey", "ApiKey", "APIKey", "apikey", "APIKEY", "api-key", "X-Api-Key", "x_api_key", "userApiKey", "vendorApiKey",
            "user_key", "vendor_key", "password", "Password", "newPassword", "new_password", "passwd", "access_token", "accessToken", "accesstoken",
            "refresh_token", "sessionToken", "client_secret", "clientSecret", "Authorization", "auth", "privateKey", "credentials", "my api key",
        ] {
            assert!(secret_name(name).is_some(), "{name} is a credential's name");
        }
        for name in ["key_id", "keyId", "api_key_id", "apiKeyId", "monkey", "token_type", "password_changed_at", "authorized", "user", "tokens_used", ""] {
            assert_eq!(secret_name(name), None, "{name} is not a credential's name");
        }
        for family in seedwatch_schemas::Family::ALL {
            for field in seedwatch_schemas::fields::all_fields(family) {
                assert_eq!(secret_name(field.name), None, "the contract's field `{}` would be redacted", field.name);
            }
        }
        // The key fields in any spelling give the event its key id, in the contract's order.
        let rank = |field: &str| KEY_FIELDS.iter().position(|k| *k == field).map(SecretName::Key);
        for (name, field) in [("apiKey", "api_key"), ("X-Api-Key", "api_key"), ("userApiKey", "user_key"), ("VENDOR_KEY", "vendor_key"), ("authorization", "authorization")] {
            assert_eq!(secret_name(name), rank(field), "{name}");
        }
        assert_eq!(secret_name("newPassword"), Some(SecretName::Other));
    }

    /// A key has one fingerprint whether it comes with its auth scheme or not, so one key
    /// gets one key id on every path (the collector's text, the decoder's field).
    #[test]
    fn an_auth_scheme_stays_readable_and_is_not_fingerprinted() {
        let r = redactor();
        let token_marker = format!("[redacted:{}]", r.fingerprinter().fingerprint(b"sk_live_AAA"));
        assert_eq!(r.redact("Authorization: Bearer sk_live_AAA"), format!("Authorization: Bearer {token_marker}"));
        assert_eq!(r.redact(r#"{"authorization":"Basic sk_live_AAA"}"#), format!(r#"{{"authorization":"Basic {token_marker}"}}"#));
        assert_eq!(r.redact_line(r#"{"authorization":"Bearer sk_live_AAA"}"#), format!(r#"{{"authorization":"{token_marker}"}}"#));
        assert_eq!(r.redact("api_key=sk_live_AAA"), format!("api_key={token_marker}"));
    }

    /// Members named as credentials are replaced at any depth, strings are redacted after
    /// their escapes are decoded, and what is not a credential is kept as it was, in order.
    #[test]
    fn json_is_redacted_member_by_member_at_any_depth() {
        let r = redactor();
        let line = r#"{"family":"api","vendor":{"apiKey":"S1","list":[{"newPassword":"S2"},7,null]},"note":"see ?api_key=S3","go":"\u0026x_api_key=S4","n":1.5}"#;
        let out = r.redact_line(line);
        for secret in ["S1", "S2", "S3", "S4"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        let value: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(value["family"], "api");
        assert_eq!(value["vendor"]["list"][1], 7);
        assert_eq!(value["n"], 1.5);
        assert!(value["note"].as_str().is_some_and(|n| n.starts_with("see ?api_key=[redacted:")), "{out}");
        assert!(out.find("\"family\"") < out.find("\"vendor\"") && out.find("\"note\"") < out.find("\"go\""), "members reordered: {out}");
        // Nothing to redact: the line is returned as it was, not re-serialised.
        let clean = r#"{"family":"api",  "key_id":"k1", "path":"/x?licenseNumber=1"}"#;
        assert!(matches!(r.redact_line(clean), Cow::Borrowed(l) if l == clean));
        // Not JSON: the free-text rules.
        assert!(!r.redact_line("{not json password=S5").contains("S5"));
    }

    /// The pre-check may say yes wrongly, never no: every text redaction changes passes it.
    #[test]
    fn the_pre_check_passes_everything_redaction_changes() {
        let r = redactor();
        let names = SECRET_WORDS.iter().chain(["api_key", "userApiKey", "X-Api-Key", "x_api_key", "access_token"].iter()).flat_map(|n| [n.to_string(), n.to_ascii_uppercase()]);
        let mut changed = 0;
        for name in names {
            for glue in ["=", ":", " = ", "\":\"", "' : '", "\\\":\\\"", " ", ""] {
                for value in ["sk_live_AAA", "Bearer sk_live_AAA", ""] {
                    let text = format!("x {name}{glue}{value} y");
                    let redacted = r.redact(&text) != text;
                    changed += usize::from(redacted);
                    assert!(!redacted || r.might_contain_secret(text.as_bytes()), "pre-check missed {text}");
                    let json = serde_json::json!({ "note": text }).to_string();
                    let redacted = r.redact_line(&json) != json;
                    assert!(!redacted || r.json_might_contain_secret(json.as_bytes()), "JSON pre-check missed {json}");
                }
            }
        }
        assert!(changed > 100, "only {changed} of the texts were redacted: the test no longer covers the forms");
        assert!(!r.might_contain_secret(b"/packages/v2/api_key/active"), "no `:` or `=`, so no value to redact");
        assert!(!r.might_contain_secret(b"https://api-co.metrc.com/packages?licenseNumber=1&key_id=k"), "no credential's name before a delimiter");
    }

    #[test]
    fn leaves_lookalike_names_and_plain_text_alone() {
        let r = redactor();
        for case in [r#"{"api_key_id":"k1"}"#, "no secrets here", r#"{"key_id":"abc"}"#, "password reset requested", "monkey=1"] {
            assert_eq!(r.redact(case), case);
            assert_eq!(r.redact_line(case), case);
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

//! nginx JSON access logs as `api` events.
//!
//! Many operators see their POS's calls to Metrc or BioTrack only through an
//! nginx egress proxy in front of the state API. With a JSON `log_format`
//! (README "nginx access logs"), each request line is rewritten here into the
//! event contract before the decoder sees it, so validation, redaction (an
//! `Authorization` header logged by nginx becomes a key fingerprint) and dead
//! letters work as for any other line. A line that cannot be mapped is passed
//! on with what could be mapped, and the decoder dead-letters it with the
//! missing field as the reason.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::source::{LineChunk, LineSpan};

/// Where the fields nginx cannot know come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NginxMapping {
    /// Query parameter naming the license (Metrc's API: `licenseNumber`).
    #[serde(default = "default_license_param")]
    pub license_param: String,
    /// Host header → system and state, for hosts not of the form `api-XX.metrc.com`.
    #[serde(default)]
    pub hosts: BTreeMap<String, HostEntry>,
    /// Client address → license and integration, for calls without the license parameter.
    #[serde(default)]
    pub clients: BTreeMap<String, ClientEntry>,
}

/// A state API host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    /// `metrc` or `biotrack`.
    pub system: String,
    /// Two-letter state.
    pub state: String,
}

/// A POS client behind the proxy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// License it calls for.
    #[serde(default)]
    pub license: Option<String>,
    /// Integration name (flowhub, dutchie, ...).
    #[serde(default)]
    pub integration: Option<String>,
    /// Location id.
    #[serde(default)]
    pub location: Option<String>,
}

fn default_license_param() -> String {
    "licenseNumber".into()
}

impl Default for NginxMapping {
    fn default() -> Self {
        Self { license_param: default_license_param(), hosts: BTreeMap::new(), clients: BTreeMap::new() }
    }
}

impl NginxMapping {
    /// Load a mapping file; errors name the file, line and field.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_yaml::from_str(&text).map_err(|e| {
            let at = e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default();
            format!("{}{at}: {e}", path.display())
        })
    }

    /// Rewrite every line of `input` into `output` (same line numbers) as contract lines.
    pub fn map_chunk(&self, input: &LineChunk, output: &mut LineChunk) {
        output.clear();
        output.source = input.source.clone();
        for span in &input.lines {
            let start = output.data.len();
            match self.map_line(input.line(span)) {
                Some(mapped) => output.data.extend_from_slice(mapped.as_bytes()),
                // Not JSON: passed on as it is, to be dead-lettered with the decoder's reason.
                None => output.data.extend_from_slice(input.line(span)),
            }
            output.lines.push(LineSpan { start, end: output.data.len(), number: span.number, original_len: span.original_len.max(output.data.len() - start) });
        }
    }

    /// One nginx JSON line as a contract line; `None` when it is not a JSON object.
    pub fn map_line(&self, line: &[u8]) -> Option<String> {
        let Ok(Value::Object(log)) = serde_json::from_slice::<Value>(line) else { return None };
        let text = |k: &str| -> Option<String> {
            match log.get(k)? {
                Value::String(s) if !s.is_empty() && s != "-" => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let mut out = Map::new();
        out.insert("family".into(), "api".into());
        if let Some(t) = nginx_time(&log) {
            out.insert("time".into(), t);
        }
        let (method, uri) = match (text("request_method"), text("request_uri")) {
            (Some(m), Some(u)) => (Some(m), Some(u)),
            _ => {
                // `$request`: "GET /path?query HTTP/1.1"
                let request = text("request").unwrap_or_default();
                let mut parts = request.split_whitespace();
                (parts.next().map(String::from), parts.next().map(String::from))
            }
        };
        let uri = uri.unwrap_or_default();
        let (path, query) = uri.split_once('?').unwrap_or((&uri, ""));
        if let Some(m) = method {
            out.insert("method".into(), m.into());
        }
        if !path.is_empty() {
            out.insert("endpoint".into(), path.into());
        }
        let client = text("remote_addr");
        let known = client.as_deref().and_then(|c| self.clients.get(c)).cloned().unwrap_or_default();
        let license = query_param(query, &self.license_param).or(known.license);
        if let Some(l) = license {
            out.insert("license".into(), l.into());
        }
        if let Some(l) = known.location {
            out.insert("location".into(), l.into());
        }
        let host = text("host").or_else(|| text("http_host")).or_else(|| text("server_name")).unwrap_or_default();
        let host = host.split(':').next().unwrap_or_default().to_ascii_lowercase();
        if let Some((system, state)) = self.system_and_state(&host) {
            out.insert("system".into(), system.into());
            out.insert("state".into(), state.into());
        }
        let agent = text("http_user_agent");
        let integration = known.integration.or_else(|| agent.as_deref().and_then(integration_from_agent)).unwrap_or_else(|| "unknown".into());
        out.insert("integration".into(), integration.into());
        if let Some(status) = text("status").and_then(|s| s.parse::<i64>().ok()) {
            out.insert("status".into(), status.into());
        }
        if let Some(bytes) = text("body_bytes_sent").or_else(|| text("bytes_sent")).and_then(|s| s.parse::<i64>().ok()) {
            out.insert("bytes".into(), bytes.into());
        }
        if let Some(seconds) = text("request_time").and_then(|s| s.parse::<f64>().ok()) {
            out.insert("latency_ms".into(), ((seconds * 1000.0).round() as i64).into());
        }
        if let Some(ip) = client {
            out.insert("src_ip".into(), ip.into());
        }
        if let Some(a) = agent {
            out.insert("user_agent".into(), a.into());
        }
        // The decoder turns this into a key fingerprint and never stores it.
        if let Some(auth) = text("http_authorization") {
            out.insert("authorization".into(), auth.into());
        }
        Some(Value::Object(out).to_string())
    }

    fn system_and_state(&self, host: &str) -> Option<(String, String)> {
        if let Some(h) = self.hosts.get(host) {
            return Some((h.system.clone(), h.state.to_ascii_uppercase()));
        }
        // Metrc's per-state hosts: api-ca.metrc.com, sandbox-api-co.metrc.com.
        let state = host.strip_suffix(".metrc.com")?.rsplit("api-").next()?;
        (state.len() == 2 && state.bytes().all(|b| b.is_ascii_alphabetic())).then(|| ("metrc".to_string(), state.to_ascii_uppercase()))
    }
}

/// `$time_iso8601`, `$msec` (epoch seconds) or `$time_local`.
fn nginx_time(log: &Map<String, Value>) -> Option<Value> {
    if let Some(Value::String(t)) = log.get("time_iso8601").or_else(|| log.get("time")) {
        return Some(Value::String(t.clone()));
    }
    let msec = match log.get("msec")? {
        Value::String(s) => s.parse::<f64>().ok(),
        Value::Number(n) => n.as_f64(),
        _ => None,
    };
    if let Some(s) = msec {
        return Some(Value::from((s * 1000.0).round() as i64));
    }
    let Some(Value::String(local)) = log.get("time_local") else { return None };
    chrono::DateTime::parse_from_str(local, "%d/%b/%Y:%H:%M:%S %z").ok().map(|t| Value::String(t.to_rfc3339()))
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.replace("%2D", "-").replace("%2d", "-")).filter(|v| !v.is_empty())
}

/// `Flowhub/2.3 (+https://...)` → `flowhub`.
fn integration_from_agent(agent: &str) -> Option<String> {
    let first = agent.split(['/', ' ', ';']).next()?.trim().to_ascii_lowercase();
    let known = ["flowhub", "dutchie", "treez", "jane", "greenbits", "blaze", "cova", "leaflogix", "biotrack", "posabit"];
    known.iter().find(|k| first.contains(*k)).map(|k| k.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"time_iso8601":"2026-11-02T14:03:11-07:00","remote_addr":"10.20.0.7","request_method":"GET","request_uri":"/packages/v2/active?licenseNumber=402R-01063&lastModifiedStart=2026-11-02","status":"200","body_bytes_sent":"48211","request_time":"0.184","host":"api-co.metrc.com","http_user_agent":"Dutchie/5.2 (+https://dutchie.com)","http_authorization":"Basic dmVuZG9yLWtleTp1c2VyLWtleQ=="}"#;

    #[test]
    fn a_proxied_metrc_call_becomes_an_api_event() {
        let mapped: Value = serde_json::from_str(&NginxMapping::default().map_line(LINE.as_bytes()).expect("json")).expect("mapped json");
        let want = serde_json::json!({
            "family": "api", "time": "2026-11-02T14:03:11-07:00", "method": "GET", "endpoint": "/packages/v2/active",
            "license": "402R-01063", "system": "metrc", "state": "CO", "integration": "dutchie", "status": 200,
            "bytes": 48211, "latency_ms": 184, "src_ip": "10.20.0.7", "user_agent": "Dutchie/5.2 (+https://dutchie.com)",
            "authorization": "Basic dmVuZG9yLWtleTp1c2VyLWtleQ=="
        });
        assert_eq!(mapped, want);
    }

    #[test]
    fn configured_hosts_and_clients_fill_what_the_request_lacks() {
        let mapping: NginxMapping = serde_yaml::from_str(
            "hosts:\n  wa.biotrackthc.net: {system: biotrack, state: wa}\nclients:\n  10.9.9.9: {license: '412345', integration: cova, location: tacoma}\n",
        )
        .expect("mapping");
        let line = r#"{"msec":"1762100000.250","remote_addr":"10.9.9.9","request":"POST /serverjson.asp HTTP/1.1","status":502,"host":"wa.biotrackthc.net:443","http_user_agent":"-"}"#;
        let mapped: Value = serde_json::from_str(&mapping.map_line(line.as_bytes()).expect("json")).expect("mapped json");
        assert_eq!(mapped["time"], 1_762_100_000_250i64);
        assert_eq!((mapped["system"].as_str(), mapped["state"].as_str(), mapped["license"].as_str()), (Some("biotrack"), Some("WA"), Some("412345")));
        assert_eq!((mapped["integration"].as_str(), mapped["location"].as_str(), mapped["method"].as_str()), (Some("cova"), Some("tacoma"), Some("POST")));
        assert!(mapped.get("user_agent").is_none(), "nginx's `-` is no value");
        // Without a license from either place, the line still maps, and the decoder says what is missing.
        let unknown = r#"{"time_iso8601":"2026-11-02T14:03:11Z","remote_addr":"10.1.1.1","request_method":"GET","request_uri":"/x","status":"200","host":"api-co.metrc.com"}"#;
        let mapped: Value = serde_json::from_str(&mapping.map_line(unknown.as_bytes()).expect("json")).expect("mapped json");
        assert!(mapped.get("license").is_none());
        assert!(NginxMapping::default().map_line(b"not json").is_none());
    }

    #[test]
    fn mapped_lines_decode_with_the_credential_fingerprinted() {
        use crate::{Decoder, Fingerprinter, Redactor};
        use datafusion::arrow::array::AsArray;
        let mut input = LineChunk::new();
        for (i, line) in [LINE, "garbage"].iter().enumerate() {
            let start = input.data.len();
            input.data.extend_from_slice(line.as_bytes());
            input.lines.push(LineSpan { start, end: input.data.len(), number: i as u64 + 1, original_len: line.len() });
        }
        let mut mapped = LineChunk::new();
        NginxMapping::default().map_chunk(&input, &mut mapped);
        let fingerprinter = Fingerprinter::new(b"0123456789abcdef0123456789abcdef").expect("key");
        let mut decoder = Decoder::new(Redactor::new(fingerprinter));
        let decoded = decoder.decode_chunk(&mapped, 0).expect("decode");
        assert_eq!((decoded.stats.events_total(), decoded.stats.dead_total()), (1, 1));
        let api = &decoded.events[0].batch;
        let key_id = api.column_by_name("key_id").expect("key_id").as_string::<i32>().value(0).to_string();
        assert_eq!(key_id.len(), 16, "a fingerprint, not the header: {key_id}");
        let dump = format!("{:?}", api);
        assert!(!dump.contains("dmVuZG9yLWtleTp1c2VyLWtleQ"), "the raw header reached the batch");
        let dead = decoded.dead_letters.as_ref().expect("dead letters");
        assert_eq!(dead.column_by_name("line").expect("line").as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0), 2);
    }

    #[test]
    fn unknown_mapping_fields_are_refused() {
        let err = serde_yaml::from_str::<NginxMapping>("license_parameter: x\n").expect_err("unknown field").to_string();
        assert!(err.contains("license_parameter"), "{err}");
    }
}

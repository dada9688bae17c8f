use super::*;
use crate::redact::Fingerprinter;
use seedwatch_schemas::arrow::array::AsArray;
use seedwatch_schemas::arrow::datatypes::{Int64Type, TimestampMillisecondType};
use serde_json::{json, Value};

const SECRET: &[u8] = b"test-secret-0123456789";

fn decoder() -> Decoder {
    let fp = Fingerprinter::new(SECRET).unwrap_or_else(|e| panic!("{e}"));
    Decoder::new(Redactor::new(fp))
}

fn chunk(lines: &[&[u8]]) -> LineChunk {
    let mut c = LineChunk::new();
    c.source = Arc::from("test.ndjson");
    for (i, line) in lines.iter().enumerate() {
        let start = c.data.len();
        c.data.extend_from_slice(line);
        c.lines.push(crate::source::LineSpan { start, end: c.data.len(), number: i as u64 + 1, original_len: line.len() });
    }
    c
}

fn decode(lines: &[&[u8]]) -> DecodedChunk {
    decoder().decode_chunk(&chunk(lines), 1_700_000_000_000).unwrap_or_else(|e| panic!("{e}"))
}

fn valid(family: Family) -> Value {
    let mut v = json!({
        "time": "2026-11-05T10:00:00-08:00", "family": family.as_str(), "system": "metrc",
        "state": "CA", "license": "C10-0000001-LIC"
    });
    let extra = match family {
        Family::Login => json!({"user": "alice", "outcome": "success", "src_ip": "203.0.113.5"}),
        Family::Api => json!({"key_id": "k1", "integration": "flowhub", "method": "GET",
                              "endpoint": "/packages/v2/active", "status": 200, "src_ip": "203.0.113.5"}),
        Family::Sync => json!({"integration": "dutchie", "outcome": "success"}),
        Family::Audit => json!({"actor": "alice", "action": "user_created"}),
    };
    if let (Some(a), Value::Object(b)) = (v.as_object_mut(), extra) {
        a.extend(b);
    }
    v
}

/// (reason code, reason) of the single dead letter, or None when the line decoded.
fn outcome(line: &[u8]) -> Option<(String, String)> {
    let out = decode(&[line]);
    let dead = out.dead_letters?;
    assert_eq!(dead.num_rows(), 1);
    let col = |n: &str| dead.column_by_name(n).map(|c| c.as_string::<i32>().value(0).to_string()).unwrap_or_default();
    Some((col("reason_code"), col("reason")))
}

fn code(line: &[u8]) -> String {
    outcome(line).map(|(c, _)| c).unwrap_or_else(|| "decoded".into())
}

#[test]
fn valid_lines_of_every_family_decode() {
    for family in Family::ALL {
        let line = valid(family).to_string();
        assert_eq!(code(line.as_bytes()), "decoded", "{family}: {line}");
    }
}

#[test]
fn every_bad_input_class_is_dead_lettered_with_its_reason() {
    let with = |family: Family, key: &str, value: Value| {
        let mut v = valid(family);
        v[key] = value;
        v.to_string()
    };
    let without = |family: Family, key: &str| {
        let mut v = valid(family);
        v.as_object_mut().map(|m| m.remove(key));
        v.to_string()
    };
    let long = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_LINE_BYTES + 10));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"this is not json".to_vec(), "not_json"),
        (b"{\"family\":\"login\",".to_vec(), "not_json"),
        (b"[1,2,3]".to_vec(), "not_object"),
        (b"{\"family\":\"login\",\"user\":\"\xff\xfe\"}".to_vec(), "invalid_utf8"),
        (without(Family::Login, "user").into_bytes(), "missing_field"),
        (without(Family::Api, "status").into_bytes(), "missing_field"),
        (without(Family::Sync, "family").into_bytes(), "missing_field"),
        (with(Family::Login, "time", json!("yesterday")).into_bytes(), "bad_time"),
        (with(Family::Login, "time", json!("2026-11-05T10:00:00")).into_bytes(), "bad_time"),
        (with(Family::Login, "time", json!(1_762_300_000)).into_bytes(), "bad_time"),
        (with(Family::Login, "family", json!("kerberos")).into_bytes(), "unknown_family"),
        (with(Family::Audit, "action", json!("user_teleported")).into_bytes(), "unknown_action"),
        (with(Family::Api, "status", json!("two hundred")).into_bytes(), "wrong_type"),
        (with(Family::Login, "mfa", json!("yes")).into_bytes(), "wrong_type"),
        (with(Family::Login, "user", json!(42)).into_bytes(), "wrong_type"),
        (with(Family::Login, "src_ip", json!("300.1.2.3")).into_bytes(), "invalid_ip"),
        (with(Family::Api, "src_ip", json!("not-an-ip")).into_bytes(), "invalid_ip"),
        (with(Family::Login, "state", json!("XX")).into_bytes(), "invalid_value"),
        (with(Family::Api, "status", json!(999)).into_bytes(), "invalid_value"),
        (long.into_bytes(), "line_too_long"),
        (b"".to_vec(), "empty_line"),
        (b"   \t ".to_vec(), "empty_line"),
        (br#"{"family":"login","user":"a","user":"b"}"#.to_vec(), "duplicate_field"),
    ];
    for (line, expected) in cases {
        let shown = String::from_utf8_lossy(&line[..line.len().min(120)]).into_owned();
        assert_eq!(code(&line), expected, "line: {shown}");
    }
}

#[test]
fn a_bad_line_does_not_disturb_its_neighbours() {
    let good = valid(Family::Login).to_string();
    let out = decode(&[good.as_bytes(), b"garbage", good.as_bytes()]);
    assert_eq!(out.stats.events[Family::Login.index()], 2);
    assert_eq!(out.stats.dead_total(), 1);
    let dead = out.dead_letters.unwrap_or_else(|| panic!("no dead letters"));
    assert_eq!(dead.column_by_name("line").map(|c| c.as_primitive::<Int64Type>().value(0)), Some(2));
    assert_eq!(dead.column_by_name("raw").map(|c| c.as_string::<i32>().value(0).to_string()).as_deref(), Some("garbage"));
}

#[test]
fn normalises_values_and_fills_defaults() {
    let mut v = valid(Family::Api);
    v["system"] = json!("METRC");
    v["state"] = json!("ca");
    v["integration"] = json!("FlowHub");
    v["method"] = json!("get");
    v["status"] = json!("401");
    v["src_ip"] = json!("::ffff:198.51.100.7");
    v["time"] = json!(1_762_365_600_000i64);
    let out = decode(&[v.to_string().as_bytes()]);
    let batch = &out.events[0].batch;
    let s = |n: &str| batch.column_by_name(n).map(|c| c.as_string::<i32>().value(0).to_string()).unwrap_or_default();
    assert_eq!(
        (s("system"), s("state"), s("integration"), s("method"), s("src_ip"), s("location")),
        ("metrc".into(), "CA".into(), "flowhub".into(), "GET".into(), "198.51.100.7".into(), "C10-0000001-LIC".into())
    );
    let i = |n: &str| batch.column_by_name(n).map(|c| c.as_primitive::<Int64Type>().value(0));
    assert_eq!((i("status"), i("records")), (Some(401), Some(0)));
    let t = batch.column_by_name("time").map(|c| c.as_primitive::<TimestampMillisecondType>().value(0));
    assert_eq!(t, Some(1_762_365_600_000));
    assert_eq!(s("event_id").len(), 32, "derived event ids are 128-bit hashes");
}

#[test]
fn unknown_fields_are_kept_in_extra() {
    let mut v = valid(Family::Login);
    v["terminal"] = json!("register-3");
    v["geo"] = json!({"city": "Oakland"});
    let out = decode(&[v.to_string().as_bytes()]);
    let extra = out.events[0].batch.column_by_name("extra").map(|c| c.as_string::<i32>().value(0).to_string());
    let parsed: Value = serde_json::from_str(&extra.unwrap_or_default()).unwrap_or_default();
    assert_eq!(parsed, json!({"geo": {"city": "Oakland"}, "terminal": "register-3"}));
}

#[test]
fn raw_keys_become_fingerprints_and_never_reach_a_column() {
    let raw_key = "sk_live_9f8e7d6c5b4a";
    let mut v = valid(Family::Api);
    v.as_object_mut().map(|m| m.remove("key_id"));
    v["api_key"] = json!(raw_key);
    v["endpoint"] = json!(format!("/sales/v2/receipts?licenseNumber=X&api_key={raw_key}"));
    v["note"] = json!({"password": raw_key});
    let bad = format!("{{\"family\":\"api\",\"api_key\":\"{raw_key}\",oops}}");
    let out = decode(&[v.to_string().as_bytes(), bad.as_bytes()]);
    let fp = Fingerprinter::new(SECRET).unwrap_or_else(|e| panic!("{e}")).fingerprint(raw_key.as_bytes());
    let batch = &out.events[0].batch;
    let key_id = batch.column_by_name("key_id").map(|c| c.as_string::<i32>().value(0).to_string());
    assert_eq!(key_id.as_deref(), Some(fp.as_str()));
    assert_eq!(out.stats.redacted, 1);
    let dead = out.dead_letters.unwrap_or_else(|| panic!("the malformed line must be dead-lettered"));
    for b in [batch, &dead] {
        for col in b.columns() {
            let text = format!("{:?}", col);
            assert!(!text.contains(raw_key), "raw key leaked into {text}");
        }
    }
    let raw = dead.column_by_name("raw").map(|c| c.as_string::<i32>().value(0).to_string()).unwrap_or_default();
    assert!(raw.contains(&format!("[redacted:{fp}]")), "{raw}");
}

#[test]
fn bearer_authorization_fingerprints_the_token_like_api_key() {
    let mut a = valid(Family::Api);
    a.as_object_mut().map(|m| m.remove("key_id"));
    let mut b = a.clone();
    a["api_key"] = json!("tok123456");
    b["Authorization"] = json!("Bearer tok123456");
    let ids: Vec<String> = [a, b]
        .iter()
        .map(|v| {
            let out = decode(&[v.to_string().as_bytes()]);
            out.events[0].batch.column_by_name("key_id").map(|c| c.as_string::<i32>().value(0).to_string()).unwrap_or_default()
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
}

/// The committed JSON Schemas and the decoder agree: every required property
/// is enforced, every enum is closed, every integer is typed, every optional
/// property may be null, and every property is a column.
#[test]
fn decoder_agrees_with_the_committed_json_schemas() {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from).join("../schemas/json");
    for family in Family::ALL {
        let path = dir.join(seedwatch_schemas::json_schema::file_name(family));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let schema: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let required: Vec<&str> = schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        for name in &required {
            let mut v = valid(family);
            v.as_object_mut().map(|m| m.remove(*name));
            assert_eq!(code(v.to_string().as_bytes()), "missing_field", "{family}: removing required `{name}`");
        }
        let columns: Vec<String> = event_schema(family).fields().iter().map(|f| f.name().clone()).collect();
        let props = schema["properties"].as_object().cloned().unwrap_or_default();
        for (name, prop) in &props {
            if name == "family" || fields::SECRET_FIELDS.contains(&name.as_str()) {
                continue;
            }
            assert!(columns.contains(name), "{family}: property `{name}` is not a column");
            let optional = !required.contains(&name.as_str());
            let inner = if optional { prop["anyOf"][0].clone() } else { prop.clone() };
            if optional {
                let mut v = valid(family);
                v[name.as_str()] = Value::Null;
                let mut ok = code(v.to_string().as_bytes());
                if ok == "missing_field" && name == "key_id" {
                    ok = "decoded".into(); // required unless a raw key is given: covered by anyOf
                }
                assert_eq!(ok, "decoded", "{family}: null optional `{name}`");
            }
            if let Some(values) = inner["enum"].as_array() {
                for value in values.iter().take(3) {
                    let mut v = valid(family);
                    v[name.as_str()] = value.clone();
                    assert_eq!(code(v.to_string().as_bytes()), "decoded", "{family}: `{name}` = {value}");
                }
                let mut v = valid(family);
                v[name.as_str()] = json!("definitely-not-listed");
                assert_ne!(code(v.to_string().as_bytes()), "decoded", "{family}: `{name}` enum must be closed");
            }
            if inner["oneOf"][0]["type"] == "integer" {
                let mut v = valid(family);
                v[name.as_str()] = json!(true);
                assert_eq!(code(v.to_string().as_bytes()), "wrong_type", "{family}: `{name}` must be an integer");
            }
        }
        for column in &columns {
            let provenance = seedwatch_schemas::arrow_schema::PROVENANCE_COLUMNS.contains(&column.as_str());
            assert!(provenance || props.contains_key(column), "{family}: column `{column}` missing from the JSON Schema");
        }
    }
}

#[test]
fn a_line_redacted_upstream_decodes_like_the_raw_line() {
    // A collector replaces credentials by markers before Kafka; the detector
    // decoding that text must end with the same key fingerprint and columns.
    let raw_key = "sk_live_9f8e7d6c5b4a";
    let mut v = valid(Family::Api);
    v.as_object_mut().map(|m| m.remove("key_id"));
    v["api_key"] = json!(raw_key);
    let line = v.to_string();
    let redactor = Redactor::new(Fingerprinter::new(SECRET).unwrap_or_else(|e| panic!("{e}")));
    let upstream = redactor.redact(&line);
    assert!(!upstream.contains(raw_key), "{upstream}");
    let out = decode(&[line.as_bytes(), upstream.as_bytes()]);
    let batch = &out.events[0].batch;
    assert_eq!(batch.num_rows(), 2);
    for column in ["key_id", "extra"] {
        let c = batch.column_by_name(column).map(|c| c.as_string::<i32>().clone()).unwrap_or_else(|| panic!("{column}"));
        assert_eq!(c.value(0), c.value(1), "{column} differs between the raw and the upstream-redacted line");
    }
    // Only markers of the exact shape are trusted as fingerprints.
    assert_eq!(crate::redact::existing_marker(b"[redacted:0123456789abcdef]"), Some("0123456789abcdef"));
    for not_marker in [&b"[redacted:0123456789ABCDEF]"[..], b"[redacted:0123]", b"redacted:0123456789abcdef", b"[redacted:0123456789abcdefg]"] {
        assert_eq!(crate::redact::existing_marker(not_marker), None);
    }
}

#[test]
fn a_time_beyond_arrival_plus_the_clock_skew_is_dead_lettered() {
    let at = |time: &str| {
        let mut v = valid(Family::Login);
        v["time"] = json!(time);
        v.to_string().into_bytes()
    };
    let (near, far) = (at("2026-11-05T10:10:00Z"), at("2099-12-31T00:00:00Z"));
    let arrival = chrono::DateTime::parse_from_rfc3339("2026-11-05T10:00:00Z").map_or(0, |t| t.timestamp_millis());
    let mut bounded = decoder().with_max_clock_skew(15 * 60 * 1000);
    let decoded = bounded.decode_chunk(&chunk(&[&near, &far]), arrival).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(decoded.stats.events_total(), 1, "ten minutes ahead is within the skew");
    let dead = decoded.dead_letters.as_ref().unwrap_or_else(|| panic!("the far line is dead-lettered"));
    assert_eq!(dead.column_by_name("reason_code").map(|c| c.as_string::<i32>().value(0).to_string()), Some("future_time".to_string()));
    assert_eq!(decoded.max_event_time(), chrono::DateTime::parse_from_rfc3339("2026-11-05T10:10:00Z").ok().map(|t| t.timestamp_millis()), "it moves no watermark");
    // Without a bound (fixtures, goldens) any date is accepted.
    assert_eq!(decoder().decode_chunk(&chunk(&[&far]), arrival).unwrap_or_else(|e| panic!("{e}")).stats.events_total(), 1);
}

#[test]
fn numbers_are_whole_and_in_range_or_dead_lettered_saying_why() {
    let with = |records: &str| {
        let line = valid(Family::Api).to_string();
        line.replacen("\"status\":200", &format!("\"status\":200,\"records\":{records}"), 1)
    };
    let records = |records: &str| {
        let out = decode(&[with(records).as_bytes()]);
        assert!(out.dead_letters.is_none(), "{records}");
        let batch = &out.events[0].batch;
        batch.column_by_name("records").map(|c| c.as_primitive::<Int64Type>().value(0))
    };
    // Whole numbers as exports write them.
    assert_eq!(records("48000"), Some(48000));
    assert_eq!(records("48000.0"), Some(48000));
    assert_eq!(records("4.8e4"), Some(48000));
    assert_eq!(records("\"48000\""), Some(48000));
    for (value, code, reason) in [
        ("1.5", "wrong_type", "field `records` must be a whole number, got a fraction"),
        ("1e400", "invalid_value", "field `records` is beyond the 64-bit integer range"),
        ("-1e400", "invalid_value", "field `records` is beyond the 64-bit integer range"),
        ("99999999999999999999", "invalid_value", "field `records` is beyond the 64-bit integer range"),
        ("9223372036854775808", "invalid_value", "field `records` is beyond the 64-bit integer range"),
        ("\"NaN\"", "wrong_type", "field `records` must be an integer, got a string"),
        ("\"inf\"", "invalid_value", "field `records` is beyond the 64-bit integer range"),
        ("NaN", "not_json", ""),
        ("-3", "invalid_value", "field `records` is -3, outside 0..=9223372036854775807"),
        ("true", "wrong_type", "field `records` must be an integer, got a boolean"),
    ] {
        let (got_code, got_reason) = outcome(with(value).as_bytes()).unwrap_or_else(|| panic!("{value} decoded"));
        assert_eq!(got_code, code, "{value}: {got_reason}");
        if !reason.is_empty() {
            assert_eq!(got_reason, reason, "{value}");
        }
    }
}

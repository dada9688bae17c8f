//! The archive as a system of record: `seedwatch archive verify` against the signed,
//! hash-chained manifest. Each test tampers with its own copy of one archive the way an
//! insider could (a flipped byte, a removed or added file, a rewritten, reordered or dropped
//! manifest entry, another key) and checks that verify names exactly what was done; an
//! auditor's independent check uses only openssl and SHA-256.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{copy_of_archive, seedwatch, text, ArchiveCopy};

/// Append entries (a person's notes on a finding, each written by its own writer) until the
/// manifest has `wanted`: a run commits its files in few entries.
fn grow(copy: &ArchiveCopy, wanted: usize) {
    let id = common::query_json(&copy.archive, "SELECT finding_id FROM findings_latest ORDER BY finding_id LIMIT 1")[0]["finding_id"].as_str().expect("a finding").to_string();
    let (archive, key) = (copy.archive.display().to_string(), copy.key.display().to_string());
    for n in 0.. {
        if entries(&copy.archive).len() >= wanted {
            break;
        }
        let note = format!("note {n}");
        let out = seedwatch(&["findings", "ack", &id, "--archive", &archive, "--note", &note, "--by", "dana", "--signing-key", &key]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

/// `archive verify` with `extra` flags: (exit code, stdout lines).
fn verify(copy: &ArchiveCopy, extra: &[&str]) -> (i32, Vec<String>) {
    let (archive, key) = (copy.archive.display().to_string(), copy.key.display().to_string());
    let mut args = vec!["archive", "verify", "--archive", &archive, "--signing-key", &key, "--quiet"];
    args.extend(extra);
    let out = seedwatch(&args);
    let code = out.status.code().unwrap_or(-1);
    assert!(code == 0 || code == 1, "verify {extra:?} failed to run: {}", text(&out.stderr));
    (code, text(&out.stdout).lines().map(str::to_string).collect())
}

/// The problems verify printed (every line but the summary).
fn problems(lines: &[String]) -> Vec<String> {
    lines.iter().filter(|l| !l.starts_with("verify: ")).cloned().collect()
}

fn data_files(archive: &Path, table: &str) -> Vec<PathBuf> {
    let mut files = seedwatch_archive::writer::parquet_files(&archive.join(table)).expect("files");
    files.sort();
    files
}

fn relative(archive: &Path, path: &Path) -> String {
    seedwatch_archive::manifest::relative_path(archive, path)
}

fn entries(archive: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(archive.join("_manifest")).expect("manifest dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    files
}

#[test]
fn an_untouched_archive_verifies_with_every_file_rehashed() {
    let copy = copy_of_archive();
    let (code, lines) = verify(&copy, &[]);
    assert_eq!((code, problems(&lines)), (0, vec![]), "{lines:?}");
    let on_disk: usize = ["login", "api", "sync", "audit", "findings", "dead_letter"].iter().map(|t| data_files(&copy.archive, t).len()).sum();
    let summary = lines.last().expect("a summary");
    assert!(summary.contains(&format!("{on_disk} files")), "{summary} vs {on_disk} files on disk");
}

#[test]
fn a_flipped_byte_a_removed_file_and_an_added_file_are_each_named() {
    let copy = copy_of_archive();
    let login = data_files(&copy.archive, "login");
    let (flipped, removed) = (&login[0], &login[1]);
    let mut bytes = fs::read(flipped).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(flipped, bytes).expect("write");
    fs::remove_file(removed).expect("remove");
    let api = data_files(&copy.archive, "api");
    let added = api[0].with_file_name("part-planted.parquet");
    fs::copy(&api[0], &added).expect("plant a file");

    let (code, lines) = verify(&copy, &[]);
    assert_eq!(code, 1);
    let mut got = problems(&lines).iter().map(|l| l.split(':').next().unwrap_or_default().to_string()).collect::<Vec<_>>();
    got.sort();
    let mut want = vec![
        format!("ALTERED {}", relative(&copy.archive, flipped)),
        format!("MISSING {}", relative(&copy.archive, removed)),
        format!("UNRECORDED {}", relative(&copy.archive, &added)),
    ];
    want.sort();
    assert_eq!(got, want, "{lines:?}");
    assert!(lines.last().is_some_and(|l| l.starts_with("verify: 3 problem(s)")), "{lines:?}");
}

#[test]
fn a_date_range_rehashes_only_its_days() {
    let copy = copy_of_archive();
    let login = data_files(&copy.archive, "login");
    let first = &login[0];
    let date = relative(&copy.archive, first).split('/').nth(1).and_then(|d| d.strip_prefix("date=")).expect("a date partition").to_string();
    let mut bytes = fs::read(first).expect("read");
    bytes[100] ^= 0xff;
    fs::write(first, bytes).expect("write");
    let next_day = (chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").expect("date") + chrono::Days::new(1)).format("%Y-%m-%d").to_string();
    let (code, lines) = verify(&copy, &["--from", &next_day]);
    assert_eq!((code, problems(&lines)), (0, vec![]), "a day outside the range is not re-hashed");
    let (code, lines) = verify(&copy, &["--from", &date, "--to", &next_day]);
    assert_eq!(code, 1);
    assert_eq!(problems(&lines).len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("ALTERED login/"), "{lines:?}");
}

#[test]
fn a_rewritten_entry_breaks_its_signature_and_the_next_entrys_link() {
    let copy = copy_of_archive();
    grow(&copy, 3);
    let files = entries(&copy.archive);
    // An insider lowers a row count in entry 2 and keeps the old signature line.
    let content = fs::read_to_string(&files[1]).expect("entry 2");
    let (body, signature) = content.split_once('\n').expect("two lines");
    let rewritten = body.replacen("\"rows\":", "\"rows\":1", 1);
    assert_ne!(rewritten, body);
    fs::write(&files[1], format!("{rewritten}\n{signature}")).expect("rewrite");
    let (code, lines) = verify(&copy, &[]);
    assert_eq!(code, 1);
    let got = problems(&lines);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].starts_with("manifest entry 2: the signature does not verify"), "{got:?}");
    assert!(got[1].starts_with("manifest entry 3 does not chain to entry 2"), "{got:?}");
}

#[test]
fn reordered_and_dropped_entries_are_named() {
    let copy = copy_of_archive();
    grow(&copy, 3);
    let files = entries(&copy.archive);
    // Swap entries 2 and 3.
    let (two, three) = (fs::read(&files[1]).expect("2"), fs::read(&files[2]).expect("3"));
    fs::write(&files[1], &three).expect("write");
    fs::write(&files[2], &two).expect("write");
    let (code, lines) = verify(&copy, &[]);
    assert_eq!(code, 1);
    let got = problems(&lines);
    assert!(got.iter().any(|l| l.starts_with("manifest entry 2 holds entry 3")), "{got:?}");
    assert!(got.iter().any(|l| l.starts_with("manifest entry 3 holds entry 2")), "{got:?}");
    assert!(got.iter().all(|l| l.starts_with("manifest entry")), "files are still all recorded: {got:?}");

    // Another copy: drop entry 2. Its files are now unrecorded, and the gap is named.
    let copy = copy_of_archive();
    grow(&copy, 3);
    let files = entries(&copy.archive);
    let dropped = fs::read_to_string(&files[1]).expect("2");
    fs::remove_file(&files[1]).expect("drop");
    let (code, lines) = verify(&copy, &[]);
    assert_eq!(code, 1);
    let got = problems(&lines);
    assert_eq!(got[0], "manifest entry 2 is missing", "{got:?}");
    let added: serde_json::Value = serde_json::from_str(dropped.lines().next().expect("body")).expect("json");
    let unrecorded = got.iter().filter(|l| l.starts_with("UNRECORDED")).count();
    let in_entry = added["added"].as_array().map_or(0, Vec::len);
    assert!(in_entry > 0 && unrecorded == in_entry, "{in_entry} files in the dropped entry, {unrecorded} unrecorded: {got:?}");
}

#[test]
fn dropping_the_newest_entries_is_caught_by_the_head_an_auditor_kept() {
    let copy = copy_of_archive();
    let archive = copy.archive.display().to_string();
    let out = seedwatch(&["archive", "head", "--archive", &archive]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let head = text(&out.stdout).trim().to_string();
    let files = entries(&copy.archive);
    assert!(head.starts_with(&format!("{}:", files.len())), "{head}");
    assert_eq!(verify(&copy, &["--head", &head]).0, 0);
    // The newest entry and the files it recorded go: the rest of the chain is intact.
    let newest = fs::read_to_string(files.last().expect("an entry")).expect("newest");
    let body: serde_json::Value = serde_json::from_str(newest.lines().next().expect("body")).expect("json");
    for file in body["added"].as_array().expect("added files") {
        fs::remove_file(copy.archive.join(file["path"].as_str().expect("path"))).expect("remove");
    }
    fs::remove_file(files.last().expect("an entry")).expect("drop the newest entry");
    let (code, lines) = verify(&copy, &[]);
    assert_eq!((code, problems(&lines)), (0, vec![]), "without the kept head, a truncated chain looks whole");
    let (code, lines) = verify(&copy, &["--head", &head]);
    assert_eq!(code, 1);
    assert_eq!(problems(&lines), vec![format!("the kept head, entry {}, is gone: entries were removed from the end of the manifest", files.len())]);
}

#[test]
fn another_key_fails_every_signature_and_the_auditor_checks_an_entry_with_openssl() {
    let copy = copy_of_archive();
    // A run commits once; two entries, so that entry 2 chains to entry 1.
    grow(&copy, 2);
    let dir = tempfile::tempdir().expect("tempdir");
    // Someone else's key.
    let other = dir.path().join("other.pem");
    let out = seedwatch(&["archive", "public-key", "--signing-key", &other.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let other_public = dir.path().join("other.pub.pem");
    fs::write(&other_public, &out.stdout).expect("write");
    let (code, lines) = verify(&copy, &["--public-key", &other_public.display().to_string()]);
    assert_eq!(code, 1);
    let got = problems(&lines);
    assert_eq!(got.len(), entries(&copy.archive).len(), "{got:?}");
    assert!(got.iter().all(|l| l.contains("which is not among the given public keys")), "{got:?}");
    // A signature forged under the right key id: the entry names the archive's key, the
    // signature is another key's.
    let forged_copy = copy_of_archive();
    grow(&forged_copy, 2);
    let files = entries(&forged_copy.archive);
    let content = fs::read_to_string(&files[0]).expect("entry 1");
    let body = content.lines().next().expect("body").to_string();
    let other_key = seedwatch_archive::manifest::ManifestSigner::load(&other).expect("other key");
    let forged = seedwatch_archive::manifest::sign_line(&other_key, &body);
    fs::write(&files[0], format!("{body}\n{forged}\n")).expect("forge");
    let (code, lines) = verify(&forged_copy, &[]);
    assert_eq!(code, 1);
    let key_id = serde_json::from_str::<serde_json::Value>(&body).expect("json")["key_id"].as_str().expect("key id").to_string();
    assert_eq!(
        problems(&lines),
        vec![
            format!("manifest entry 1: the signature does not verify with key {key_id}: the entry was rewritten, or signed by another key under that id"),
            "manifest entry 2 does not chain to entry 1: that entry was rewritten, replaced or reordered".to_string(),
        ]
    );

    // The right public key, exported for the auditor, checks entry 2 with openssl alone, and
    // entry 2 names the SHA-256 of entry 1's file.
    let out = seedwatch(&["archive", "public-key", "--signing-key", &copy.key.display().to_string()]);
    let public = dir.path().join("auditor.pub.pem");
    fs::write(&public, &out.stdout).expect("write");
    assert_eq!(verify(&copy, &["--public-key", &public.display().to_string()]).0, 0);
    let files = entries(&copy.archive);
    let content = fs::read_to_string(&files[1]).expect("entry 2");
    let (body, signature) = content.split_once('\n').expect("two lines");
    fs::write(dir.path().join("body"), body).expect("body");
    fs::write(dir.path().join("sig"), hex::decode(signature.trim()).expect("hex signature")).expect("sig");
    let openssl = |body: &str| {
        std::process::Command::new("openssl")
            .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
            .arg(&public)
            .args(["-rawin", "-in"])
            .arg(dir.path().join(body))
            .arg("-sigfile")
            .arg(dir.path().join("sig"))
            .output()
            .expect("openssl (Debian's openssl package)")
    };
    let out = openssl("body");
    assert!(out.status.success(), "openssl: {}{}", text(&out.stdout), text(&out.stderr));
    fs::write(dir.path().join("forged"), body.replacen("\"rows\":", "\"rows\":9", 1)).expect("forged");
    assert!(!openssl("forged").status.success(), "openssl accepts a changed entry");
    let entry: serde_json::Value = serde_json::from_str(body).expect("json");
    let first = fs::read(&files[0]).expect("entry 1");
    use sha2::Digest;
    assert_eq!(entry["prev"].as_str(), Some(hex::encode(sha2::Sha256::digest(&first)).as_str()));
}

#[test]
fn writers_with_keys_of_their_own_are_checked_each_with_its_own() {
    let copy = copy_of_archive();
    let dir = tempfile::tempdir().expect("tempdir");
    // A second host, with its own key, works a finding in the same archive.
    let host_b = dir.path().join("host-b.pem");
    let id = common::query_json(&copy.archive, "SELECT finding_id FROM findings_latest ORDER BY finding_id LIMIT 1")[0]["finding_id"].as_str().expect("a finding").to_string();
    let archive = copy.archive.display().to_string();
    let out = seedwatch(&["findings", "ack", &id, "--archive", &archive, "--note", "host b", "--by", "dana", "--signing-key", &host_b.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let public = |key: &Path, name: &str| {
        let out = seedwatch(&["archive", "public-key", "--signing-key", &key.display().to_string()]);
        let path = dir.path().join(name);
        fs::write(&path, &out.stdout).expect("write");
        path.display().to_string()
    };
    let (a, b) = (public(&copy.key, "a.pub.pem"), public(&host_b, "b.pub.pem"));
    let (code, lines) = verify(&copy, &["--public-key", &a]);
    assert_eq!(code, 1);
    let got = problems(&lines);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].ends_with("which is not among the given public keys"), "{got:?}");
    let (code, lines) = verify(&copy, &["--public-key", &a, "--public-key", &b]);
    assert_eq!((code, problems(&lines)), (0, vec![]));
}

#[test]
fn another_writer_chains_after_the_run_and_an_archive_without_a_manifest_is_adopted() {
    let copy = copy_of_archive();
    let archive = copy.archive.display().to_string();
    let before = entries(&copy.archive).len();
    let id = common::query_json(&copy.archive, "SELECT finding_id FROM findings_latest ORDER BY finding_id LIMIT 1")[0]["finding_id"].as_str().expect("a finding").to_string();
    let key = copy.key.display().to_string();
    let out = seedwatch(&["findings", "ack", &id, "--archive", &archive, "--note", "looking", "--by", "dana", "--signing-key", &key]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(entries(&copy.archive).len(), before + 1);
    assert_eq!(verify(&copy, &[]).0, 0);

    // An archive written before manifests existed: every file is unrecorded until a writer
    // opens it and records them as found.
    fs::remove_dir_all(copy.archive.join("_manifest")).expect("no manifest");
    let (code, lines) = verify(&copy, &[]);
    assert_eq!(code, 1);
    assert!(problems(&lines).iter().all(|l| l.starts_with("UNRECORDED")), "{lines:?}");
    let out = seedwatch(&["findings", "resolve", &id, "--archive", &archive, "--note", "done", "--by", "dana", "--signing-key", &key]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (code, lines) = verify(&copy, &[]);
    assert_eq!((code, problems(&lines)), (0, vec![]));
    let first = fs::read_to_string(&entries(&copy.archive)[0]).expect("entry 1");
    assert!(first.contains("\"action\":\"adopt\""), "{first}");
}

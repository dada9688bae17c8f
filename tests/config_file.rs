//! One configuration file for every command: its settings stand for flags, a
//! `SEEDWATCH_<SECTION>_<KEY>` variable overrides the file, a flag overrides both;
//! `config check` prints what applies with secrets masked and names every bad line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{options, repo, text};

fn seedwatch_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_seedwatch"));
    command.args(args).current_dir(repo());
    for name in ["SEEDWATCH_CONFIG", "SEEDWATCH_ARCHIVE_ROOT", "SEEDWATCH_ACCESS", "SEEDWATCH_ROLE", "SEEDWATCH_SIGNING_KEY"] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().expect("running seedwatch")
}

fn finding_count(archive: &Path) -> u64 {
    let out = seedwatch_env(&["query", "--archive", &archive.display().to_string(), "--format", "json", "SELECT count(DISTINCT finding_id) AS n FROM findings"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    rows[0]["n"].as_u64().expect("n")
}

fn has_events(archive: &Path) -> bool {
    common::files_under(&archive.join("login")).iter().any(|f| f.extension().is_some_and(|e| e == "parquet"))
}

#[test]
fn one_file_configures_run_and_query_and_variables_and_flags_win() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let data = d.join("data");
    seedwatch::generate::generate(&data, &options(5, 2, 11)).expect("generate");
    let events = data.join("events.ndjson").display().to_string();
    let config = d.join("seedwatch.yaml");
    std::fs::write(
        &config,
        format!(
            "# a site's file\narchive:\n  root: {a}\n  signing_key: {k}/signing.pem\nkeys:\n  fingerprint_key: {k}/fp.key\nrules:\n  locations: {data}/locations.csv\n  roster: {data}/roster.csv\nrun:\n  partitions: 2\n",
            a = d.join("from-file").display(),
            k = d.display(),
            data = data.display()
        ),
    )
    .expect("write config");
    let cfg = config.display().to_string();

    // The file alone: no --archive, --locations, --roster or keys on the command line.
    let out = seedwatch_env(&["--config", &cfg, "run", "--quiet", "--input", &events], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(has_events(&d.join("from-file")), "run archived where the file says");
    // The same run with every flag spelled out finds the same: the file's reference files were used.
    let flagged = d.join("flags");
    let args = common::run_args(&data, d, &flagged.display().to_string(), &[PathBuf::from(&events)]);
    let out = seedwatch_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = finding_count(&flagged);
    assert!(expected > 0, "the data set has incidents");
    assert_eq!(finding_count(&d.join("from-file")), expected, "the file's locations and roster applied");

    // query takes its archive from the file too (SEEDWATCH_CONFIG names it).
    let out = seedwatch_env(&["query", "--format", "csv", "SELECT count(DISTINCT finding_id) FROM findings"], &[("SEEDWATCH_CONFIG", &cfg)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).lines().nth(1) == Some(&expected.to_string()), "{}", text(&out.stdout));

    // A variable overrides the file; a flag overrides both.
    let env_root = d.join("from-env").display().to_string();
    let out = seedwatch_env(&["--config", &cfg, "run", "--quiet", "--input", &events], &[("SEEDWATCH_ARCHIVE_ROOT", &env_root)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(has_events(&d.join("from-env")));
    let flag_root = d.join("from-flag").display().to_string();
    let out = seedwatch_env(&["--config", &cfg, "run", "--quiet", "--input", &events, "--archive", &flag_root], &[("SEEDWATCH_ARCHIVE_ROOT", &env_root)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(has_events(&d.join("from-flag")));
    assert_eq!(finding_count(&d.join("from-flag")), expected);
}

#[test]
fn config_check_prints_what_applies_masks_secrets_and_names_every_bad_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = repo().join("config/seedwatch.example.yaml").display().to_string();
    let secrets = [("SEEDWATCH_KAFKA_SASL_PASSWORD", "hunter2-kafka"), ("SEEDWATCH_ALERTMANAGER_URL", "https://soc:hunter2-am@am.example:9093"), ("SEEDWATCH_DETECT_GROUP", "site-7")];
    let out = seedwatch_env(&["config", "check", &example], &secrets);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(!shown.contains("hunter2"), "a secret was printed:\n{shown}");
    assert!(shown.contains("# sasl.password: \"********\"  ($SEEDWATCH_KAFKA_SASL_PASSWORD)"), "{shown}");
    assert!(shown.contains("url: \"https://soc:********@am.example:9093\"  # $SEEDWATCH_ALERTMANAGER_URL"), "{shown}");
    assert!(shown.contains("group: \"site-7\"  # $SEEDWATCH_DETECT_GROUP"), "{shown}");
    assert!(shown.contains(&format!("brokers: \"kafka-0.kafka:9092,kafka-1.kafka:9092\"  # {example}:")), "{shown}");
    assert!(shown.contains("# commit_interval: \"5s\"  (default)"), "{shown}");

    // What it prints is a configuration file that says the same.
    let printed = dir.path().join("effective.yaml");
    std::fs::write(&printed, &shown).expect("write");
    let again = seedwatch_env(&["config", "check", &printed.display().to_string()], &[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let values = |s: &str| -> Vec<String> { s.lines().filter(|l| !l.trim_start().starts_with('#')).map(|l| l.split("  #").next().unwrap_or_default().to_string()).collect() };
    assert_eq!(values(&text(&again.stdout)), values(&shown));

    // Every bad line, each on one line naming the file, the line and the key; exit 1.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kafka:\n  brokers: k:9092\ndetect:\n  commit_interval: soon\nlog:\n  format: xml\n").expect("write");
    let out = seedwatch_env(&["config", "check", &bad.display().to_string()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let errors = text(&out.stderr);
    let b = bad.display().to_string();
    assert!(errors.contains(&format!("error: {b}:4: detect.commit_interval: invalid value 'soon'")), "{errors}");
    assert!(errors.contains(&format!("error: {b}:6: log.format: invalid value 'xml'")), "{errors}");
    assert_eq!(errors.lines().count(), 2, "{errors}");

    // A command started with that file stops before doing anything, in one line, exit 2.
    let out = seedwatch_env(&["--config", &b, "topics", "create"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr).trim_end().lines().count(), 1, "{}", text(&out.stderr));

    // Unknown keys and Kafka secrets in the file are refused at their line.
    for (file, line, needle) in [
        ("kafka:\n  brokers: k\n  partitons: 8\n", 3, "unknown field `partitons`"),
        ("intake:\n  listen: 0.0.0.0:8088\n\nkafka:\n  settings:\n    sasl.password: hunter2\n", 5, "kafka.settings.sasl.password: secrets do not go in the configuration file"),
    ] {
        std::fs::write(&bad, file).expect("write");
        let out = seedwatch_env(&["config", "check", &b], &[]);
        assert_eq!(out.status.code(), Some(1));
        let e = text(&out.stderr);
        assert!(e.contains(&format!("{b}:{line}:")) && e.contains(needle) && !e.contains("hunter2"), "{e}");
    }
}

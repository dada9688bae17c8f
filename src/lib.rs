//! The seedwatch binary's wiring: the embedded pipeline, the generator, the
//! truth scorer and the internal-events module. The stages themselves live
//! in the `seedwatch-schemas`, `-ingest`, `-detect` and `-archive` crates.

pub mod access;
pub mod alertmanager;
pub mod archive_admin;
pub mod backfill;
pub mod collect;
pub mod config;
pub mod detect_daemon;
pub mod findings;
pub mod fuzzing;
pub mod generate;
pub mod intake;
pub mod kafka_source;
pub use seedwatch_runtime::internal_events;
pub mod metrics_server;
pub mod ocsf;
pub mod pipeline;
pub mod report;
pub mod shell;
pub mod tls;
pub mod rule_fixtures;
pub mod secrets;
pub mod truth;

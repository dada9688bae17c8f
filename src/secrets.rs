//! Secrets come from files (or the environment), never from the command line, where `ps` and
//! shell history show them; and a secret file others can read is refused, since by then it is
//! no longer a secret. One place for the check, so every secret file says the same thing.

use std::path::Path;

use anyhow::{Context, Result};

/// librdkafka settings that hold secrets: never on the command line (`ps`, shell history) nor
/// in the configuration file (a ConfigMap, a repository). Each comes from
/// `SEEDWATCH_KAFKA_<NAME>` (upper case, `.` as `_`) or from the file named by
/// `SEEDWATCH_KAFKA_<NAME>_FILE` (refused unless mode 0600).
pub const KAFKA_SECRET_SETTINGS: [&str; 5] = ["sasl.password", "ssl.key.password", "ssl.keystore.password", "sasl.oauthbearer.client.secret", "ssl.key.pem"];

/// Where a Kafka secret setting goes instead of a flag or the configuration file.
pub fn kafka_secret_advice(setting: &str) -> String {
    let env = kafka_secret_env(setting);
    format!("set {env}, or {env}_FILE to a file only its owner can read (mode 0600)")
}

/// The environment variable a Kafka secret setting comes from (`sasl.password`: `SEEDWATCH_KAFKA_SASL_PASSWORD`).
pub fn kafka_secret_env(setting: &str) -> String {
    format!("SEEDWATCH_KAFKA_{}", setting.to_ascii_uppercase().replace('.', "_"))
}

/// The bytes of `path`, a file holding `what` (e.g. "the TLS private key"), refused with one
/// line when its permissions let group or others read it.
pub fn read_private(path: &Path, what: &str) -> Result<Vec<u8>> {
    check_private(path, what)?;
    std::fs::read(path).with_context(|| format!("{}: reading {what}", path.display()))
}

/// [`read_private`] as text, without surrounding whitespace (a token or password file written
/// by `echo` ends in a newline that is not part of the secret).
pub fn read_private_text(path: &Path, what: &str) -> Result<String> {
    let bytes = read_private(path, what)?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: {what} is not UTF-8 text", path.display()))?;
    let text = text.trim();
    anyhow::ensure!(!text.is_empty(), "{}: the file is empty; it should hold {what}", path.display());
    Ok(text.to_string())
}

/// Refuse a file others can read (see [`seedwatch_schemas::secret_file`]: the owner, or the
/// process's own group as Kubernetes mounts Secrets; elsewhere the platform's ACLs are the
/// operator's to set).
pub fn check_private(path: &Path, what: &str) -> Result<()> {
    match seedwatch_schemas::secret_file::exposure(path).with_context(|| format!("{}: reading {what}", path.display()))? {
        Some(why) => anyhow::bail!("{}: {why} {what}; chmod 600 it", path.display()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_secret_file_others_can_read_is_refused_naming_the_file_and_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read_private_text(&path, "the metrics token").expect_err("0644 refused").to_string();
        assert!(err.contains("token: permissions 644 let others read the metrics token; chmod 600 it"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read_private_text(&path, "the metrics token").expect("0600 read"), "s3cret");
        std::fs::write(&path, "\n").expect("write");
        assert!(read_private_text(&path, "the metrics token").is_err_and(|e| e.to_string().contains("empty")));
    }
}

//! A throwaway certificate authority made with the `openssl` command (as an operator or
//! cert-manager would make one), for TLS tests with real clients.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA in a directory; issues server and client certificates for 127.0.0.1 and localhost.
pub struct Pki {
    dir: PathBuf,
    /// The CA certificate (PEM): what clients trust, and what a server trusts clients by.
    pub ca: PathBuf,
    name: String,
}

/// A certificate and its private key (mode 0600).
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("`openssl` is not on PATH (./scripts/test.sh installs it)");
    assert!(out.status.success(), "openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

impl Pki {
    /// A new CA called `name` under `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        std::fs::create_dir_all(dir).expect("pki dir");
        let (ca, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        let subject = format!("/CN={name}");
        openssl(&[
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", &subject,
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", &key.display().to_string(), "-out", &ca.display().to_string(),
        ]);
        private(&key);
        Self { dir: dir.to_path_buf(), ca, name: name.to_string() }
    }

    /// A certificate for `cn`: a server's (for 127.0.0.1 and localhost) or a client's.
    pub fn issue(&self, cn: &str, server: bool) -> Issued {
        let (cert, key, csr, ext) = (self.dir.join(format!("{cn}.crt")), self.dir.join(format!("{cn}.key")), self.dir.join(format!("{cn}.csr")), self.dir.join(format!("{cn}.ext")));
        let usage = if server { "serverAuth" } else { "clientAuth" };
        std::fs::write(&ext, format!("basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n")).expect("ext");
        openssl(&["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", &format!("/CN={cn}"), "-keyout", &key.display().to_string(), "-out", &csr.display().to_string()]);
        private(&key);
        let (ca_cert, ca_key) = (self.ca.display().to_string(), self.dir.join(format!("{}.key", self.name)).display().to_string());
        openssl(&[
            "x509", "-req", "-in", &csr.display().to_string(), "-CA", &ca_cert, "-CAkey", &ca_key, "-CAcreateserial", "-days", "2",
            "-extfile", &ext.display().to_string(), "-out", &cert.display().to_string(),
        ]);
        Issued { cert, key }
    }
}

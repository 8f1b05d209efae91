//! A test CA and certificates made by the `openssl` CLI, afresh for each test: it is on the
//! machine already (Debian's openssl), where rcgen would add a crate and its build to tests/.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Certs {
    pub ca: PathBuf,
    /// The broker's PKCS#8 key followed by its certificate (KIP-651's PEM key store).
    pub broker_keystore: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A CA, a broker certificate for 127.0.0.1 (also usable as a client certificate: brokers present
/// it to each other over mTLS) and a client certificate for CN=alice,OU=eng.
pub fn make_certs(dir: &Path) -> Certs {
    let dir = dir.join("certs");
    std::fs::create_dir_all(&dir).unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(&dir, &[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-ca"]].concat());
    for (name, subject, extensions) in [
        ("broker", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"),
        ("client", "/OU=eng/CN=alice", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
        openssl(&dir, &[&["req"][..], &ec, &["-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr"), "-subj", subject]].concat());
        openssl(
            &dir,
            &[
                "x509", "-req", "-in", &format!("{name}.csr"), "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                "-extfile", &format!("{name}.ext"), "-out", &format!("{name}.crt"),
            ],
        );
    }
    let keystore = [std::fs::read_to_string(dir.join("broker.key")).unwrap(), std::fs::read_to_string(dir.join("broker.crt")).unwrap()].concat();
    std::fs::write(dir.join("broker-keystore.pem"), keystore).unwrap();
    Certs {
        ca: dir.join("ca.crt"),
        broker_keystore: dir.join("broker-keystore.pem"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    }
}

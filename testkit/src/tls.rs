//! Throwaway TLS certificates, made with `openssl`: a CA and a server
//! certificate for 127.0.0.1 signed by it, for tests of TLS links.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and a server certificate for `127.0.0.1` and `localhost`, as PEM
/// files in a temp folder removed on drop.
pub struct TestCerts {
    dir: tempfile::TempDir,
}

impl TestCerts {
    /// Makes them (a second or so: two RSA keys).
    pub fn generate() -> TestCerts {
        let dir = tempfile::tempdir().expect("temp dir for certificates");
        let path = dir.path();
        std::fs::write(
            path.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write san.ext");
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=oceanchat test CA",
                "-keyout",
                "ca-key.pem",
                "-out",
                "ca.pem",
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server-key.pem",
                "-out",
                "server.csr",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                "server.pem",
            ],
        ];
        for args in steps {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(path)
                .output()
                .expect("run openssl (Debian package openssl)");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        TestCerts { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.file("ca.pem")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.file("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.file("server-key.pem")
    }

    fn file(&self, name: &str) -> PathBuf {
        Path::new(self.dir.path()).join(name)
    }
}

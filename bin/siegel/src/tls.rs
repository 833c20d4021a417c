//! The server certificate for STARTTLS: the configured one, or a
//! self-signed one generated into the data folder on first start so that
//! `siegel serve` offers STARTTLS out of the box.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the certificate came from, for the start-up output.
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub cert_path: PathBuf,
    pub generated: bool,
}

pub fn load_or_generate(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
    hostname: &str,
) -> anyhow::Result<ServerTls> {
    let (cert_path, key_path, generated) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf(), false),
        _ => {
            let dir = data_dir.join("tls");
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            let fresh = !(c.exists() && k.exists());
            if fresh {
                generate_self_signed(&dir, &c, &k, hostname)?;
            }
            (c, k, fresh)
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("reading TLS certificate {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing TLS certificate {}", cert_path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificate in {}",
        cert_path.display()
    );
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("reading TLS private key {}", key_path.display()))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "TLS certificate {} does not match its key",
                cert_path.display()
            )
        })?;
    Ok(ServerTls {
        config: Arc::new(config),
        cert_path,
        generated,
    })
}

fn generate_self_signed(dir: &Path, cert: &Path, key: &Path, hostname: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let certified = rcgen::generate_simple_self_signed(vec![hostname.to_owned()])
        .context("generating a self-signed certificate")?;
    std::fs::write(cert, certified.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    write_private(key, certified.signing_key.serialize_pem().as_bytes())?;
    Ok(())
}

/// Writes a secret file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_reuses() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!("siegel-tls-{}", std::process::id()));
        let first = load_or_generate(None, None, &dir, "mx.example.com").unwrap();
        assert!(first.generated);
        let pem = std::fs::read(&first.cert_path).unwrap();
        let second = load_or_generate(None, None, &dir, "mx.example.com").unwrap();
        assert!(!second.generated);
        assert_eq!(pem, std::fs::read(&second.cert_path).unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("tls/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Celery's message signing: the keys and certificates behind `task_serializer = "auth"`
//! (`celery/security/{key,certificate,serialization}.py`).
//!
//! A platform that runs untrusted tenants' code wants to run only work its
//! own producers sent. Celery's answer is the `auth` serializer: producers sign
//! each message body with their private key; a worker with
//! `accept_content = ["auth"]` runs only messages whose signature verifies
//! against a certificate in its store (`security_cert_store`) and refuses
//! everything else (unsigned, unknown signer, bad signature, expired
//! certificate) with a logged reason. The worker signs what it sends itself
//! (retries, canvas children: `task_serializer = "auth"`) and, with
//! `result_serializer = "auth"`, the results it stores, with its own key
//! (`security_key`) and certificate (`security_certificate`).
//!
//! As Celery: RSA keys only; RSA-PSS with MGF1 and `security_digest` (default
//! `sha256`) and the longest salt the key allows (`PSS.MAX_LENGTH`); a
//! certificate is named by its issuer's attribute values and its serial
//! number. The framing is [`crate::protocol::auth`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pss, RsaPrivateKey, RsaPublicKey};
use sha2::Digest as _;
use x509_cert::Certificate;
use x509_cert::der::{DecodePem, Encode};

use crate::config::Settings;
use crate::protocol::auth::{AuthError, SignedBody, Signer, Verifier};

/// Why the security settings cannot be used (the worker does not start).
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// Celery's `SECURITY_SETTING_MISSING`.
    #[error(
        "the auth serializer needs security_key, security_certificate and security_cert_store \
         (missing: {0})"
    )]
    Missing(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a PEM certificate Celeriac can use.
    #[error("invalid certificate {path}: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Not a PEM RSA private key Celeriac can use.
    #[error("invalid private key {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A certificate of the store has expired (Celery refuses to start too).
    #[error("expired certificate: {0:?}")]
    Expired(String),
    /// Two certificates of the store have the same id.
    #[error("duplicate certificate: {0:?}")]
    Duplicate(String),
    /// `security_cert_store` matches no file.
    #[error("security_cert_store {0:?} matches no certificate")]
    EmptyStore(String),
    /// `security_digest` names a hash Celeriac does not implement.
    #[error("security_digest {0:?} is not supported: use sha256 (the default), sha224, sha384 or sha512")]
    Digest(String),
}

/// The hash of `security_digest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// `sha224`.
    Sha224,
    /// `sha256` (Celery's default).
    Sha256,
    /// `sha384`.
    Sha384,
    /// `sha512`.
    Sha512,
}

impl DigestAlgorithm {
    /// From Celery's name (`get_digest_algorithm`: case-insensitive, `-` ignored).
    pub fn from_name(name: &str) -> Result<Self, SecurityError> {
        match name.to_ascii_lowercase().replace('-', "").as_str() {
            "sha224" => Ok(Self::Sha224),
            "sha256" => Ok(Self::Sha256),
            "sha384" => Ok(Self::Sha384),
            "sha512" => Ok(Self::Sha512),
            _ => Err(SecurityError::Digest(name.to_string())),
        }
    }

    fn output_len(self) -> usize {
        match self {
            Self::Sha224 => 28,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha224 => sha2::Sha224::digest(data).to_vec(),
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// PSS with MGF1 over this hash and a salt of `salt_len` bytes.
    fn pss(self, salt_len: usize) -> Pss {
        match self {
            Self::Sha224 => Pss::new_with_salt::<sha2::Sha224>(salt_len),
            Self::Sha256 => Pss::new_with_salt::<sha2::Sha256>(salt_len),
            Self::Sha384 => Pss::new_with_salt::<sha2::Sha384>(salt_len),
            Self::Sha512 => Pss::new_with_salt::<sha2::Sha512>(salt_len),
        }
    }

    /// `PSS.MAX_LENGTH` for a key: the encoded message's length
    /// (`ceil((modulus bits - 1) / 8)`) minus the digest and two bytes.
    fn max_salt(self, key: &RsaPublicKey) -> usize {
        let em_len = (key.n().bits() - 1).div_ceil(8);
        em_len.saturating_sub(self.output_len() + 2)
    }
}

/// One trusted certificate: its id, public key and expiry.
#[derive(Debug, Clone)]
struct Trusted {
    id: String,
    key: RsaPublicKey,
    not_after: std::time::SystemTime,
}

impl Trusted {
    fn has_expired(&self) -> bool {
        std::time::SystemTime::now() >= self.not_after
    }
}

fn read(path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::Read { path: path.to_path_buf(), source })
}

/// Celery's `Certificate.get_id()`: the issuer's attribute values and the
/// serial number (decimal), space-separated.
fn certificate_id(cert: &Certificate) -> String {
    let mut parts: Vec<String> = Vec::new();
    for rdn in cert.tbs_certificate.issuer.0.iter() {
        for atv in rdn.0.iter() {
            parts.push(String::from_utf8_lossy(atv.value.value()).into_owned());
        }
    }
    parts.push(BigUint::from_bytes_be(cert.tbs_certificate.serial_number.as_bytes()).to_string());
    parts.join(" ")
}

/// Load a PEM certificate with an RSA key (Celery refuses any other kind).
fn load_certificate(path: &Path) -> Result<Trusted, SecurityError> {
    let bad = |reason: String| SecurityError::Certificate { path: path.to_path_buf(), reason };
    let cert = Certificate::from_pem(read(path)?).map_err(|e| bad(e.to_string()))?;
    let spki = cert.tbs_certificate.subject_public_key_info.to_der().map_err(|e| bad(e.to_string()))?;
    let key = RsaPublicKey::from_public_key_der(&spki).map_err(|_| bad("not an RSA certificate".into()))?;
    let not_after = cert.tbs_certificate.validity.not_after.to_system_time();
    Ok(Trusted { id: certificate_id(&cert), key, not_after })
}

/// The files `security_cert_store` names: a directory's files, a glob in
/// the file name (`certs/*.pem`), or one file (Celery's `FSCertStore`).
fn store_files(pattern: &str) -> Result<Vec<PathBuf>, SecurityError> {
    let path = Path::new(pattern);
    let list = |dir: &Path| {
        std::fs::read_dir(dir)
            .map_err(|source| SecurityError::Read { path: dir.to_path_buf(), source })
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect::<Vec<_>>())
    };
    let mut files = if path.is_dir() {
        list(path)?
    } else if let Some(name) = path.file_name().and_then(|n| n.to_str()).filter(|n| n.contains(['*', '?'])) {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        list(dir)?
            .into_iter()
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| wildcard(name, n)))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    files.retain(|p| p.is_file());
    files.sort();
    Ok(files)
}

/// Shell-style `*` / `?` matching of one file name.
fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The trusted certificates (`security_cert_store`): verifies signed bodies.
#[derive(Debug)]
pub struct CertStore {
    certs: Vec<Trusted>,
    digest: DigestAlgorithm,
}

impl CertStore {
    /// Load every certificate `pattern` names. An expired or duplicate
    /// certificate, or none at all, is an error (as Celery's).
    pub fn load(pattern: &str, digest: DigestAlgorithm) -> Result<CertStore, SecurityError> {
        let mut certs: Vec<Trusted> = Vec::new();
        for file in store_files(pattern)? {
            let cert = load_certificate(&file)?;
            if cert.has_expired() {
                return Err(SecurityError::Expired(cert.id));
            }
            if certs.iter().any(|c| c.id == cert.id) {
                return Err(SecurityError::Duplicate(cert.id));
            }
            certs.push(cert);
        }
        if certs.is_empty() {
            return Err(SecurityError::EmptyStore(pattern.to_string()));
        }
        Ok(CertStore { certs, digest })
    }

    /// The ids of the trusted certificates.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.certs.iter().map(|c| c.id.as_str())
    }
}

impl Verifier for CertStore {
    fn verify(&self, signer: &str, body: &[u8], signature: &[u8]) -> Result<(), AuthError> {
        let Some(cert) = self.certs.iter().find(|c| c.id == signer) else {
            return Err(AuthError::UnknownSigner { signer: signer.to_string() });
        };
        if cert.has_expired() {
            return Err(AuthError::Expired { signer: signer.to_string() });
        }
        let scheme = self.digest.pss(self.digest.max_salt(&cert.key));
        cert.key
            .verify(scheme, &self.digest.hash(body), signature)
            .map_err(|_| AuthError::BadSignature { signer: signer.to_string() })
    }
}

/// The worker's own key and certificate (`security_key`,
/// `security_certificate`): signs what it sends and stores.
pub struct MessageSigner {
    key: RsaPrivateKey,
    id: String,
    digest: DigestAlgorithm,
}

impl std::fmt::Debug for MessageSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("MessageSigner").field("id", &self.id).field("digest", &self.digest).finish_non_exhaustive()
    }
}

impl MessageSigner {
    /// Load a PEM RSA private key and the certificate that names it. The key
    /// is PKCS#8 or PKCS#1, or PKCS#8 encrypted with `password`
    /// (`security_key_password`): as Celery's `load_pem_private_key`, a
    /// password for a key that is not encrypted is an error too.
    pub fn load(
        key: &Path,
        password: Option<&str>,
        certificate: &Path,
        digest: DigestAlgorithm,
    ) -> Result<MessageSigner, SecurityError> {
        let bad = |reason: &str| SecurityError::Key { path: key.to_path_buf(), reason: reason.to_string() };
        let pem = String::from_utf8(read(key)?).map_err(|_| bad("not a PEM file"))?;
        let private = if pem.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(bad("encrypted in OpenSSL's traditional format, which Celeriac cannot read: convert it to \
                 encrypted PKCS#8 (`openssl pkcs8 -topk8 -v2 aes-256-cbc -in KEY -out KEY.p8`)"));
        } else if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            let password = password.ok_or_else(|| bad("the key is encrypted: set security_key_password"))?;
            RsaPrivateKey::from_pkcs8_encrypted_pem(&pem, password).map_err(|_| {
                bad("cannot decrypt it with security_key_password (a wrong password, or a scheme other than \
                     PBES2 with PBKDF2 or scrypt and AES)")
            })?
        } else if password.is_some() {
            return Err(bad("security_key_password is set, but the key is not encrypted"));
        } else {
            RsaPrivateKey::from_pkcs8_pem(&pem)
                .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
                .map_err(|_| bad("not a PEM RSA private key (Celery supports RSA keys only)"))?
        };
        let cert = load_certificate(certificate)?;
        if cert.key != private.to_public_key() {
            return Err(bad("does not match security_certificate"));
        }
        Ok(MessageSigner { key: private, id: cert.id, digest })
    }

    /// The certificate id it signs as.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Signer for MessageSigner {
    fn sign(&self, content_type: &str, content_encoding: &str, body: &[u8]) -> SignedBody {
        let public = self.key.to_public_key();
        let scheme = self.digest.pss(self.digest.max_salt(&public));
        let signature = self
            .key
            .sign_with_rng(&mut rand_core::OsRng, scheme, &self.digest.hash(body))
            // Only fails for a salt too long for the key, which max_salt rules out.
            .unwrap_or_default();
        SignedBody {
            signer: self.id.clone(),
            signature,
            content_type: content_type.to_string(),
            content_encoding: content_encoding.to_string(),
            body: body.to_vec(),
        }
    }
}

/// What the security settings set up for a worker or a client.
#[derive(Default, Clone)]
pub struct Security {
    /// Verifies incoming signed tasks (`accept_content = ["auth"]`).
    pub verifier: Option<Arc<CertStore>>,
    /// Signs what is sent (`task_serializer = "auth"`) and stored (`result_serializer = "auth"`).
    pub signer: Option<Arc<MessageSigner>>,
}

impl Security {
    /// Whether `settings` use the auth serializer anywhere.
    pub fn wanted(settings: &Settings) -> bool {
        settings.accept_content.iter().any(|c| c == "auth")
            || settings.task_serializer == "auth"
            || settings.result_serializer == "auth"
    }

    /// Load what `settings` ask for: nothing unless the auth serializer is
    /// used; then every one of the three security settings must be set.
    pub fn from_settings(settings: &Settings) -> Result<Security, SecurityError> {
        if !Self::wanted(settings) {
            return Ok(Security::default());
        }
        let missing: Vec<&str> = [
            ("security_key", settings.security_key.is_none()),
            ("security_certificate", settings.security_certificate.is_none()),
            ("security_cert_store", settings.security_cert_store.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, absent)| absent.then_some(name))
        .collect();
        let (Some(key), Some(cert), Some(store)) =
            (&settings.security_key, &settings.security_certificate, &settings.security_cert_store)
        else {
            return Err(SecurityError::Missing(missing.join(", ")));
        };
        let digest = DigestAlgorithm::from_name(&settings.security_digest)?;
        Ok(Security {
            verifier: Some(Arc::new(CertStore::load(store, digest)?)),
            signer: Some(Arc::new(MessageSigner::load(
                Path::new(key),
                settings.security_key_password.as_deref(),
                Path::new(cert),
                digest,
            )?)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/auth").join(name)
    }

    fn captured() -> SignedBody {
        use base64::Engine as _;
        let env: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture("signed-add.json")).unwrap()).unwrap();
        let body = base64::engine::general_purpose::STANDARD.decode(env["body"].as_str().unwrap()).unwrap();
        SignedBody::unpack(&body).unwrap()
    }

    fn store() -> CertStore {
        CertStore::load(fixture("cert.pem").to_str().unwrap(), DigestAlgorithm::Sha256).unwrap()
    }

    #[test]
    fn a_certificate_is_named_as_celery_names_it() {
        let s = store();
        let ids: Vec<&str> = s.ids().collect();
        assert_eq!(ids, [captured().signer.as_str()]);
    }

    #[test]
    fn a_body_signed_by_a_celery_client_verifies() {
        let c = captured();
        assert_eq!(store().verify(&c.signer, &c.body, &c.signature), Ok(()));
    }

    #[test]
    fn a_changed_body_or_an_unknown_signer_is_refused() {
        let c = captured();
        let tampered = c.body.replace_first(b"[[2, 2]", b"[[2, 3]");
        assert!(matches!(store().verify(&c.signer, &tampered, &c.signature), Err(AuthError::BadSignature { .. })));
        assert!(matches!(store().verify("CN nobody 1", &c.body, &c.signature), Err(AuthError::UnknownSigner { .. })));
    }

    #[test]
    fn what_the_worker_signs_verifies_and_a_result_celery_signed_verifies_too() {
        let signer =
            MessageSigner::load(&fixture("key.pem"), None, &fixture("cert.pem"), DigestAlgorithm::Sha256).unwrap();
        let signed = signer.sign("application/json", "utf-8", b"{\"result\": 4}");
        assert_eq!(store().verify(&signed.signer, &signed.body, &signed.signature), Ok(()));
        let celery = SignedBody::unpack(&std::fs::read(fixture("signed-result.bin")).unwrap()).unwrap();
        assert_eq!(store().verify(&celery.signer, &celery.body, &celery.signature), Ok(()));
    }

    #[test]
    fn a_key_that_does_not_match_its_certificate_is_refused() {
        let e = MessageSigner::load(&fixture("untrusted-key.pem"), None, &fixture("cert.pem"), DigestAlgorithm::Sha256);
        assert!(matches!(e, Err(SecurityError::Key { .. })), "{e:?}");
    }

    #[test]
    fn an_encrypted_key_loads_with_its_password_and_only_with_it() {
        let load = |key: &str, password: Option<&str>| {
            MessageSigner::load(&fixture(key), password, &fixture("cert.pem"), DigestAlgorithm::Sha256)
        };
        let reason = |r: Result<MessageSigner, SecurityError>| match r {
            Err(SecurityError::Key { reason, .. }) => reason,
            other => panic!("expected a key error, got {other:?}"),
        };
        // The same key as key.pem, as `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes it.
        let signer = load("encrypted-key.pem", Some("celeriac-test")).unwrap();
        let signed = signer.sign("application/json", "utf-8", b"{\"result\": 4}");
        assert_eq!(store().verify(&signed.signer, &signed.body, &signed.signature), Ok(()));
        assert!(reason(load("encrypted-key.pem", Some("wrong"))).contains("cannot decrypt it"));
        assert!(reason(load("encrypted-key.pem", None)).contains("set security_key_password"));
        // As Celery (cryptography): a password for a key that is not encrypted is a mistake.
        assert!(reason(load("key.pem", Some("celeriac-test"))).contains("not encrypted"));
        // `openssl rsa -aes256 -traditional`: named, with the command that converts it.
        assert!(reason(load("traditional-encrypted-key.pem", Some("celeriac-test"))).contains("openssl pkcs8 -topk8"));
    }

    #[test]
    fn a_store_pattern_matches_file_names_like_a_shell_glob() {
        assert!(wildcard("*.pem", "cert.pem") && wildcard("c?rt*", "cert.pem") && !wildcard("*.pem", "cert.crt"));
        let dir = fixture("");
        let all = store_files(dir.join("*cert.pem").to_str().unwrap()).unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
    }

    trait ReplaceFirst {
        fn replace_first(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
    }

    impl ReplaceFirst for Vec<u8> {
        fn replace_first(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
            let at = self.windows(from.len()).position(|w| w == from).unwrap();
            [&self[..at], to, &self[at + from.len()..]].concat()
        }
    }
}

//! Celery's `auth` serializer: the framing of a signed message body
//! (`celery/security/serialization.py`, `SecureSerializer._pack/_unpack`).
//!
//! With `task_serializer = "auth"` a Celery producer serializes the body as
//! usual (JSON), signs those exact bytes with its private key (RSA-PSS, MGF1,
//! the longest salt, `security_digest`), and sends
//!
//! ```text
//! base64( base64(signer) \x00\x01 base64(signature) \x00\x01 content_type \x00\x01 content_encoding \x00\x01 body )
//! ```
//!
//! as the message body, with content type `application/data` and encoding
//! `utf-8`; `signer` is the certificate's id (`"<issuer attribute values> <serial>"`).
//! A worker with `accept_content = ["auth"]` looks the signer up in its
//! certificate store, verifies the signature over `body`, and only then
//! deserializes `body` by its inner content type. Results are framed the same
//! way with `result_serializer = "auth"`.
//!
//! This module is the framing only (pure data, checked against a capture of a
//! real Celery 5.7 client); the cryptography is behind [`Verifier`], which
//! `celeriac::security` implements.

use base64::Engine as _;

/// The separator between the fields; Celery guarantees it never appears in
/// base64 or in a content type, and splits at most four times (the body may
/// hold anything).
pub const SEPARATOR: &[u8] = b"\x00\x01";

/// The content type a signed body travels under (`registry.register('auth',
/// ..., content_type='application/data', content_encoding='utf-8')`).
pub const CONTENT_TYPE_AUTH: &str = "application/data";

/// Why a signed body is refused. None of these is ever run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a signed body (bad base64, too few fields, a field not UTF-8).
    #[error("not a signed message body: {0}")]
    Malformed(&'static str),
    /// No certificate of the store has this id.
    #[error("unknown certificate: {signer:?}")]
    UnknownSigner {
        /// The signer id the message names.
        signer: String,
    },
    /// The signer's certificate has expired.
    #[error("expired certificate: {signer:?}")]
    Expired {
        /// The signer id.
        signer: String,
    },
    /// The signature does not match the body under the signer's key.
    #[error("bad signature from {signer:?}")]
    BadSignature {
        /// The signer id the message names.
        signer: String,
    },
}

/// A signed body, unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBody {
    /// The certificate id of the signer: issuer attribute values and serial
    /// number, space-separated (`Certificate.get_id()`).
    pub signer: String,
    /// The RSA-PSS signature over `body`.
    pub signature: Vec<u8>,
    /// The inner serializer's content type, e.g. `application/json`.
    pub content_type: String,
    /// The inner content encoding, e.g. `utf-8`.
    pub content_encoding: String,
    /// The serialized body that was signed.
    pub body: Vec<u8>,
}

fn b64(bytes: &[u8]) -> Result<Vec<u8>, AuthError> {
    base64::engine::general_purpose::STANDARD.decode(bytes).map_err(|_| AuthError::Malformed("invalid base64"))
}

fn text(bytes: &[u8], what: &'static str) -> Result<String, AuthError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| AuthError::Malformed(what))
}

impl SignedBody {
    /// `SecureSerializer._unpack`: the message body (base64 text) into its fields.
    pub fn unpack(payload: &[u8]) -> Result<SignedBody, AuthError> {
        let trimmed = payload.trim_ascii();
        let raw = b64(trimmed)?;
        let mut fields = Vec::with_capacity(5);
        let mut rest: &[u8] = &raw;
        while fields.len() < 4 {
            let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) else {
                return Err(AuthError::Malformed("fewer than five fields"));
            };
            fields.push(&rest[..at]);
            rest = &rest[at + SEPARATOR.len()..];
        }
        Ok(SignedBody {
            signer: text(&b64(fields[0])?, "signer is not UTF-8")?,
            signature: b64(fields[1])?,
            content_type: text(fields[2], "content type is not UTF-8")?,
            content_encoding: text(fields[3], "content encoding is not UTF-8")?,
            body: rest.to_vec(),
        })
    }

    /// `SecureSerializer._pack`: the fields into a message body (base64 text).
    pub fn pack(&self) -> Vec<u8> {
        let e = &base64::engine::general_purpose::STANDARD;
        let mut raw = Vec::with_capacity(self.body.len() + self.signature.len() * 2 + 128);
        raw.extend_from_slice(e.encode(self.signer.as_bytes()).as_bytes());
        raw.extend_from_slice(SEPARATOR);
        raw.extend_from_slice(e.encode(&self.signature).as_bytes());
        raw.extend_from_slice(SEPARATOR);
        raw.extend_from_slice(self.content_type.as_bytes());
        raw.extend_from_slice(SEPARATOR);
        raw.extend_from_slice(self.content_encoding.as_bytes());
        raw.extend_from_slice(SEPARATOR);
        raw.extend_from_slice(&self.body);
        e.encode(raw).into_bytes()
    }
}

/// Checks signatures against a certificate store (`celeriac::security`).
pub trait Verifier: Send + Sync {
    /// Whether `signature` is `signer`'s over `body`.
    fn verify(&self, signer: &str, body: &[u8], signature: &[u8]) -> Result<(), AuthError>;
}

/// Signs bodies with a private key and names its certificate (`celeriac::security`).
pub trait Signer: Send + Sync {
    /// The signed form of `body`, serialized with the given content type and encoding.
    fn sign(&self, content_type: &str, content_encoding: &str, body: &[u8]) -> SignedBody;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of `tasks.add(2, 2)` as a Celery 5.7 client with
    /// `app.setup_security()` sent it (tests/fixtures/auth/signed-add.json).
    fn captured() -> Vec<u8> {
        let env: serde_json::Value =
            serde_json::from_slice(include_bytes!("../../tests/fixtures/auth/signed-add.json")).unwrap();
        base64::engine::general_purpose::STANDARD.decode(env["body"].as_str().unwrap()).unwrap()
    }

    #[test]
    fn a_captured_signed_body_unpacks_into_signer_signature_and_the_json_body() {
        let s = SignedBody::unpack(&captured()).unwrap();
        assert!(s.signer.starts_with("NO Celeriac Test producer "), "{}", s.signer);
        assert_eq!(s.signature.len(), 256, "a 2048-bit RSA signature");
        assert_eq!((s.content_type.as_str(), s.content_encoding.as_str()), ("application/json", "utf-8"));
        assert_eq!(
            s.body,
            br#"[[2, 2], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#.to_vec()
        );
    }

    #[test]
    fn packing_an_unpacked_body_gives_back_the_captured_bytes() {
        let raw = captured();
        assert_eq!(SignedBody::unpack(&raw).unwrap().pack(), raw);
    }

    #[test]
    fn a_body_that_is_not_signed_is_malformed() {
        assert_eq!(SignedBody::unpack(b"[[2, 2], {}, {}]"), Err(AuthError::Malformed("invalid base64")));
        let two_fields = base64::engine::general_purpose::STANDARD.encode(b"YQ==\x00\x01YQ==");
        assert_eq!(SignedBody::unpack(two_fields.as_bytes()), Err(AuthError::Malformed("fewer than five fields")));
    }

    #[test]
    fn the_separator_inside_the_body_stays_in_the_body() {
        let s = SignedBody {
            signer: "CA 1".into(),
            signature: vec![1, 2, 3],
            content_type: "application/json".into(),
            content_encoding: "utf-8".into(),
            body: b"\"a\x00\x01b\"".to_vec(),
        };
        assert_eq!(SignedBody::unpack(&s.pack()).unwrap(), s);
    }
}

//! Signed bus payloads. With a shared secret, every payload this bus publishes is
//! `v1.<HMAC-SHA256 of the JSON, 64 hex digits>.<JSON>`, and every payload it receives must
//! carry a valid signature: whoever can PUBLISH on the channel but does not hold the
//! secret (a compromised neighbour on a shared Redis, a misrouted service) can no longer
//! inject or forge messages. Spring replicas publish unsigned JSON, so signing and a
//! shared channel with them exclude each other.

use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &[u8] = b"v1.";
const SIGNATURE_HEX: usize = 64;

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// The HMAC key of a bus.
#[derive(Clone)]
pub(crate) struct Signer {
    key: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(***)")
    }
}

/// Why a received payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Unsigned,
    BadSignature,
}

impl Refused {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned payload, and CHAT_BUS_SECRET is set",
            Self::BadSignature => "the signature does not match CHAT_BUS_SECRET",
        }
    }
}

/// Whether `payload` looks signed (so a bus without a secret can say why it is refused).
pub(crate) fn is_signed(payload: &[u8]) -> bool {
    payload.starts_with(PREFIX)
        && payload.len() > PREFIX.len() + SIGNATURE_HEX
        && payload[PREFIX.len() + SIGNATURE_HEX] == b'.'
}

impl Signer {
    /// `None` for a secret shorter than [`MIN_SECRET_BYTES`].
    pub(crate) fn new(secret: &[u8]) -> Option<Self> {
        if secret.len() < MIN_SECRET_BYTES {
            return None;
        }
        Hmac::<Sha256>::new_from_slice(secret)
            .ok()
            .map(|key| Self { key })
    }

    pub(crate) fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let mut mac = self.key.clone();
        mac.update(payload);
        let tag = hex::encode(mac.finalize().into_bytes());
        let mut signed = Vec::with_capacity(PREFIX.len() + SIGNATURE_HEX + 1 + payload.len());
        signed.extend_from_slice(PREFIX);
        signed.extend_from_slice(tag.as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(payload);
        signed
    }

    /// The JSON inside a signed payload, if its signature is this key's (compared in
    /// constant time).
    pub(crate) fn open<'a>(&self, signed: &'a [u8]) -> Result<&'a [u8], Refused> {
        if !is_signed(signed) {
            return Err(Refused::Unsigned);
        }
        let (tag, payload) = (
            &signed[PREFIX.len()..PREFIX.len() + SIGNATURE_HEX],
            &signed[PREFIX.len() + SIGNATURE_HEX + 1..],
        );
        let tag = hex::decode(tag).map_err(|_| Refused::BadSignature)?;
        let mut mac = self.key.clone();
        mac.update(payload);
        mac.verify_slice(&tag)
            .map(|()| payload)
            .map_err(|_| Refused::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_payload_opens_with_its_key_only() {
        let signer = Signer::new(&[7; 32]).unwrap();
        let other = Signer::new(&[8; 32]).unwrap();
        let signed = signer.sign(br#"{"a":1}"#);
        assert!(is_signed(&signed));
        assert_eq!(signer.open(&signed), Ok(&br#"{"a":1}"#[..]));
        assert_eq!(other.open(&signed), Err(Refused::BadSignature));
        assert_eq!(signer.open(br#"{"a":1}"#), Err(Refused::Unsigned));
        let mut tampered = signed.clone();
        let last = tampered.len() - 2;
        tampered[last] = b'2';
        assert_eq!(signer.open(&tampered), Err(Refused::BadSignature));
        assert!(Signer::new(&[1; 31]).is_none(), "too short");
    }
}

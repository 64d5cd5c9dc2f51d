//! User secrets in every form users paste (PROTOCOL.md §1).
//!
//! A secret is 16 bytes. Users meet it in several spellings — classic hex, `dd`-prefixed
//! ("secure"), `ee`-prefixed with the fronted domain (fake-TLS), and mtg's base64 of
//! `0xee || secret || domain` — so parsing accepts all of them and keeps only the 16 bytes.
//! The type never prints its bytes through `Debug`, so it can sit in config structs that get
//! logged.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::Hmac;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;

/// Length of a user secret in bytes.
pub const SECRET_LEN: usize = 16;

/// A 16-byte MTProto proxy user secret: the HMAC key of the fake-TLS digest and the salt of
/// the obfuscated2 key derivation.
///
/// It also holds HMAC-SHA256 keyed with those bytes (the inner and outer pads already
/// hashed): every hello on an `mtproto: true` route is checked against every candidate
/// user, and a copy of this state saves two of the ~10 SHA-256 blocks each check costs.
#[derive(Clone)]
pub struct Secret {
    bytes: [u8; SECRET_LEN],
    keyed: Hmac<Sha256>,
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Secret {}

/// Why a secret string was refused; each message tells the user what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Nothing (or only whitespace) was given.
    #[error("secret is empty; expected 32 hex characters, or dd/ee-prefixed, or base64")]
    Empty,
    /// All characters are hex digits but the length fits no hex form.
    #[error(
        "secret must be 32 hex characters, or dd/ee-prefixed, or base64; got {len} characters"
    )]
    Length {
        /// Number of characters given (after trimming whitespace).
        len: usize,
    },
    /// A character that belongs to neither hex nor base64.
    #[error(
        "secret has an invalid character at position {position} (1-based); \
         use hex digits, or the base64 form"
    )]
    InvalidCharacter {
        /// 1-based character position of the first offending character.
        position: usize,
    },
    /// A hex-length secret (32 characters, or 34 with a `dd`/`ee` prefix) with a non-hex
    /// character that is not valid base64 of the `ee` form either: most likely a typo.
    #[error("secret has a character that is not a hex digit at position {position} (1-based)")]
    NotHex {
        /// 1-based character position of the first non-hex character.
        position: usize,
    },
    /// Base64 that decodes to something other than `0xee || 16 bytes || domain`.
    #[error(
        "base64 secret must decode to 0xee, 16 secret bytes and a domain; \
         it decodes to {len} bytes{}", if *starts_with_ee { "" } else { " not starting with 0xee" }
    )]
    Base64Shape {
        /// Decoded length in bytes.
        len: usize,
        /// Whether the first decoded byte was the `0xee` fake-TLS marker.
        starts_with_ee: bool,
    },
    /// The domain part of an `ee` secret is not UTF-8 text.
    #[error("the domain part of the ee-secret is not valid UTF-8 text")]
    Domain,
}

impl Secret {
    /// Wraps 16 raw bytes (e.g. from a test vector or a key store).
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Secret {
        // RFC 2104 §2: a key shorter than the hash block is zero-padded to the block size, so
        // the padded 64-byte key gives the same MAC without a fallible constructor.
        let mut key = [0u8; 64];
        key[..SECRET_LEN].copy_from_slice(&bytes);
        Secret {
            bytes,
            keyed: <Hmac<Sha256> as KeyInit>::new(&key.into()),
        }
    }

    /// The raw 16 bytes, for the HMAC and key derivations.
    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.bytes
    }

    /// HMAC-SHA256 keyed with this secret, ready for its message: a copy of the state
    /// keyed once when the secret was made.
    pub fn hmac(&self) -> Hmac<Sha256> {
        self.keyed.clone()
    }

    /// A fresh random secret from the operating system's RNG (for `frontgate secret`).
    pub fn generate() -> Secret {
        let mut bytes = [0u8; SECRET_LEN];
        OsRng.fill_bytes(&mut bytes);
        Secret::from_bytes(bytes)
    }

    /// The fake-TLS form users paste into Telegram: `ee` + hex(secret) + hex(domain).
    pub fn ee_hex(&self, domain: &str) -> String {
        let mut out = String::with_capacity(2 + 2 * SECRET_LEN + 2 * domain.len());
        out.push_str("ee");
        out.push_str(&hex::encode(self.bytes));
        out.push_str(&hex::encode(domain.as_bytes()));
        out
    }

    /// Parses any accepted form and also returns the domain an `ee` form carries (so config
    /// validation can warn when it differs from the route's name).
    pub fn parse_with_domain(text: &str) -> Result<(Secret, Option<String>), SecretError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SecretError::Empty);
        }
        if text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return parse_hex_form(text);
        }
        parse_base64_form(text)
    }
}

/// Hex forms: 32 chars; `dd` + 32; `ee` + 32 + hex(domain).
fn parse_hex_form(text: &str) -> Result<(Secret, Option<String>), SecretError> {
    let len = text.len();
    let prefix = text.get(..2).map(str::to_ascii_lowercase);
    let (secret_hex, domain_hex) = match (len, prefix.as_deref()) {
        (32, _) => (text, None),
        (34, Some("dd")) => (&text[2..], None),
        (l, Some("ee")) if l >= 34 && l % 2 == 0 => (&text[2..34], Some(&text[34..])),
        _ => return Err(SecretError::Length { len }),
    };
    let mut bytes = [0u8; SECRET_LEN];
    hex::decode_to_slice(secret_hex, &mut bytes).map_err(|_| SecretError::Length { len })?;
    let domain = match domain_hex {
        Some(h) if !h.is_empty() => {
            let raw = hex::decode(h).map_err(|_| SecretError::Length { len })?;
            Some(String::from_utf8(raw).map_err(|_| SecretError::Domain)?)
        }
        _ => None,
    };
    Ok((Secret::from_bytes(bytes), domain))
}

/// mtg's base64 form of `0xee || secret || domain`, URL-safe or standard, padding optional.
fn parse_base64_form(text: &str) -> Result<(Secret, Option<String>), SecretError> {
    if let Some(pos) = text
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'=')))
    {
        return Err(SecretError::InvalidCharacter { position: pos + 1 });
    }
    let unpadded = text.trim_end_matches('=');
    let decoded = URL_SAFE_NO_PAD
        .decode(unpadded)
        .or_else(|_| STANDARD_NO_PAD.decode(unpadded))
        .map_err(|_| SecretError::Length { len: text.len() })?;
    let starts_with_ee = decoded.first() == Some(&0xee);
    if !starts_with_ee || decoded.len() < 1 + SECRET_LEN {
        if let Some(position) = hex_typo_position(text) {
            return Err(SecretError::NotHex { position });
        }
        return Err(SecretError::Base64Shape {
            len: decoded.len(),
            starts_with_ee,
        });
    }
    let mut bytes = [0u8; SECRET_LEN];
    bytes.copy_from_slice(&decoded[1..1 + SECRET_LEN]);
    let domain_raw = &decoded[1 + SECRET_LEN..];
    let domain = if domain_raw.is_empty() {
        None
    } else {
        Some(String::from_utf8(domain_raw.to_vec()).map_err(|_| SecretError::Domain)?)
    };
    Ok((Secret::from_bytes(bytes), domain))
}

/// For a string of a hex form's length, the 1-based position of its first non-hex character.
fn hex_typo_position(text: &str) -> Option<usize> {
    let prefixed = matches!(
        text.get(..2).map(str::to_ascii_lowercase).as_deref(),
        Some("dd" | "ee")
    );
    if text.len() == 32 || (text.len() == 34 && prefixed) {
        text.bytes()
            .position(|b| !b.is_ascii_hexdigit())
            .map(|p| p + 1)
    } else {
        None
    }
}

impl FromStr for Secret {
    type Err = SecretError;

    /// Accepts every form of PROTOCOL.md §1; the domain of an `ee` form is dropped.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Secret::parse_with_domain(s).map(|(secret, _)| secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The secret of mtg's test vectors in its spellings, for the tests of this crate.
#[cfg(test)]
pub(crate) mod vectors {
    /// The 16 bytes as hex.
    pub(crate) const HEX: &str = "367a189aee18fa31c190054efd4a8e95";
    /// The fronted domain.
    pub(crate) const DOMAIN: &str = "storage.googleapis.com";
    /// The ee-form users paste.
    pub(crate) const EE: &str =
        "ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d";
}

#[cfg(test)]
mod tests {
    use super::vectors::{DOMAIN, EE, HEX};
    use super::*;

    #[test]
    fn the_kept_hmac_state_is_hmac_keyed_with_the_secret() {
        use hmac::Mac;
        for bytes in [[0u8; SECRET_LEN], [0xa5; SECRET_LEN], *b"0123456789abcdef"] {
            let secret = Secret::from_bytes(bytes);
            let mut kept = secret.hmac();
            let mut fresh = <Hmac<Sha256> as Mac>::new_from_slice(&bytes).unwrap();
            kept.update(b"a ClientHello");
            fresh.update(b"a ClientHello");
            assert_eq!(kept.finalize().into_bytes(), fresh.finalize().into_bytes());
            // Each copy starts from the keyed state, not from where the last one stopped.
            let mut again = secret.hmac();
            again.update(b"a ClientHello");
            let mut other = <Hmac<Sha256> as Mac>::new_from_slice(&bytes).unwrap();
            other.update(b"a ClientHello");
            assert_eq!(again.finalize().into_bytes(), other.finalize().into_bytes());
        }
        let a = Secret::from_bytes([1; SECRET_LEN]);
        assert_eq!(a, Secret::from_bytes([1; SECRET_LEN]));
        assert_ne!(a, Secret::from_bytes([2; SECRET_LEN]));
    }

    fn expected() -> Secret {
        let mut b = [0u8; 16];
        hex::decode_to_slice(HEX, &mut b).unwrap();
        Secret::from_bytes(b)
    }

    fn b64_forms() -> Vec<String> {
        let mut raw = vec![0xee];
        raw.extend_from_slice(expected().as_bytes());
        raw.extend_from_slice(DOMAIN.as_bytes());
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        vec![
            URL_SAFE.encode(&raw),
            URL_SAFE_NO_PAD.encode(&raw),
            STANDARD.encode(&raw),
            STANDARD_NO_PAD.encode(&raw),
        ]
    }

    #[test]
    fn parses_every_form_to_the_same_bytes() {
        let want = expected();
        assert_eq!(HEX.parse::<Secret>().unwrap(), want);
        assert_eq!(HEX.to_uppercase().parse::<Secret>().unwrap(), want);
        assert_eq!(format!("dd{HEX}").parse::<Secret>().unwrap(), want);
        assert_eq!(format!("  DD{HEX}\n").parse::<Secret>().unwrap(), want);
        let (s, d) = Secret::parse_with_domain(EE).unwrap();
        assert_eq!((s, d.as_deref()), (want.clone(), Some(DOMAIN)));
        let (s, d) = Secret::parse_with_domain(&format!("ee{HEX}")).unwrap();
        assert_eq!((s, d), (want.clone(), None));
        for form in b64_forms() {
            let (s, d) = Secret::parse_with_domain(&form).unwrap();
            assert_eq!((s, d.as_deref()), (want.clone(), Some(DOMAIN)), "{form}");
        }
    }

    #[test]
    fn url_safe_and_standard_alphabets_both_parse() {
        // 0xee followed by 0xff.. bytes forces '-'/'_' vs '+'/'/' characters.
        let mut raw = vec![0xee];
        raw.extend_from_slice(&[0xfb; 16]);
        raw.extend_from_slice(b"a.example");
        use base64::engine::general_purpose::STANDARD;
        let url = URL_SAFE_NO_PAD.encode(&raw);
        let std = STANDARD.encode(&raw);
        assert!(url.contains(['-', '_']), "{url}");
        assert!(std.contains(['+', '/']), "{std}");
        assert!(
            std.ends_with('=') && !url.ends_with('='),
            "padded and unpadded"
        );
        let url_padded = base64::engine::general_purpose::URL_SAFE.encode(&raw);
        let std_unpadded = STANDARD_NO_PAD.encode(&raw);
        for form in [url, std, url_padded, std_unpadded] {
            let (s, d) = Secret::parse_with_domain(&form).unwrap();
            assert_eq!(s.as_bytes(), &[0xfb; 16]);
            assert_eq!(d.as_deref(), Some("a.example"));
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let e = HEX[..31].parse::<Secret>().unwrap_err();
        assert_eq!(e, SecretError::Length { len: 31 });
        assert_eq!(
            e.to_string(),
            "secret must be 32 hex characters, or dd/ee-prefixed, or base64; got 31 characters"
        );
        assert_eq!(
            format!("{HEX}00").parse::<Secret>().unwrap_err(),
            SecretError::Length { len: 34 }
        );
        assert_eq!(
            format!("ee{HEX}7").parse::<Secret>().unwrap_err(),
            SecretError::Length { len: 35 }
        );
        assert_eq!("".parse::<Secret>().unwrap_err(), SecretError::Empty);
        assert_eq!(
            "0123456789abcdef0123456789abcdeg"
                .parse::<Secret>()
                .unwrap_err(),
            SecretError::NotHex { position: 32 }
        );
        assert_eq!(
            format!("dd{}", &HEX[..31]).parse::<Secret>().unwrap_err(),
            SecretError::Length { len: 33 }
        );
        // Not hex-length and not the ee base64 shape.
        assert_eq!(
            URL_SAFE_NO_PAD
                .encode([0x11; 20])
                .parse::<Secret>()
                .unwrap_err(),
            SecretError::Base64Shape {
                len: 20,
                starts_with_ee: false
            }
        );
        assert_eq!(
            "0123456789abcdef 123456789abcdef"
                .parse::<Secret>()
                .unwrap_err(),
            SecretError::InvalidCharacter { position: 17 }
        );
        // base64 of 0xee + 15 bytes: too short.
        let short = URL_SAFE_NO_PAD.encode([0xee; 16]);
        assert_eq!(
            short.parse::<Secret>().unwrap_err(),
            SecretError::Base64Shape {
                len: 16,
                starts_with_ee: true
            }
        );
        // ee + secret + invalid UTF-8 domain.
        assert_eq!(
            format!("ee{HEX}ff").parse::<Secret>().unwrap_err(),
            SecretError::Domain
        );
    }

    #[test]
    fn debug_hides_bytes_and_generate_is_random() {
        let s = expected();
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_ne!(Secret::generate(), Secret::generate());
    }

    #[test]
    fn ee_hex_round_trips() {
        assert_eq!(expected().ee_hex(DOMAIN), EE);
        assert_eq!(EE.parse::<Secret>().unwrap(), expected());
    }
}

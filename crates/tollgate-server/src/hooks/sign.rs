//! Signatures: Standard Webhooks on the way out, Stripe's on the way in.
//!
//! * Out: `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
//!   keyed by the base64-decoded part of the endpoint's `whsec_…` secret.
//! * In: `Stripe-Signature: t=…,v1=…[,v1=…]`, hex HMAC-SHA256 of
//!   `"t.body"` keyed by the whole `whsec_…` string, over the raw body;
//!   any `v1` may match, compared in constant time, within a tolerance.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tollgate_domain::SecretString;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of key in a new endpoint secret.
const SECRET_BYTES: usize = 24;
const PREFIX: &str = "whsec_";

/// An endpoint's signing secret, `whsec_<base64>`. Never printed.
pub struct WebhookSecret(SecretString);

impl WebhookSecret {
    pub fn generate() -> WebhookSecret {
        let mut key = Zeroizing::new([0u8; SECRET_BYTES]);
        rand::RngCore::fill_bytes(&mut rand::rng(), key.as_mut());
        WebhookSecret(SecretString::new(format!("{PREFIX}{}", BASE64.encode(key.as_ref()))))
    }

    /// A secret as stored (sealed) and opened again.
    pub fn from_plaintext(bytes: &[u8]) -> Option<WebhookSecret> {
        let text = std::str::from_utf8(bytes).ok()?;
        let secret = WebhookSecret(SecretString::new(text));
        secret.key().map(|_| secret)
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The HMAC key: the base64 after `whsec_`.
    pub fn key(&self) -> Option<Zeroizing<Vec<u8>>> {
        let encoded = self.0.expose().strip_prefix(PREFIX)?;
        BASE64.decode(encoded).ok().filter(|k| !k.is_empty()).map(Zeroizing::new)
    }
}

/// The `webhook-signature` value for a message.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// Why a Stripe event was refused. The messages name no secret.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StripeSignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is not t=…,v1=…")]
    Malformed,
    #[error("no v1 signature of the Stripe-Signature header matches the body")]
    Mismatch,
    #[error("the Stripe-Signature timestamp is more than {0} seconds from now")]
    Stale(i64),
}

/// Checks a `Stripe-Signature` header against the raw `body`.
pub fn verify_stripe(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now_seconds: i64,
    tolerance_seconds: i64,
) -> Result<(), StripeSignatureError> {
    let header = header.ok_or(StripeSignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.parse::<i64>().map_err(|_| StripeSignatureError::Malformed)?),
            Some(("v1", sig)) => signatures.push(sig.to_ascii_lowercase()),
            Some(_) => {}
            None => return Err(StripeSignatureError::Malformed),
        }
    }
    let timestamp = timestamp.ok_or(StripeSignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(StripeSignatureError::Malformed);
    }
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = hex(&mac.finalize().into_bytes());
    // Every candidate is compared, so the time taken says nothing of which matched.
    let matched =
        signatures.iter().fold(subtle::Choice::from(0), |any, sig| any | expected.as_bytes().ct_eq(sig.as_bytes()));
    if !bool::from(matched) {
        return Err(StripeSignatureError::Mismatch);
    }
    if (now_seconds - timestamp).abs() > tolerance_seconds {
        return Err(StripeSignatureError::Stale(tolerance_seconds));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_example_signature() {
        // The example of the Standard Webhooks specification.
        let secret = WebhookSecret(SecretString::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(&secret.key().unwrap(), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn generated_secrets_have_the_whsec_form_and_a_24_byte_key() {
        let secret = WebhookSecret::generate();
        assert!(secret.expose().starts_with("whsec_"));
        assert_eq!(secret.key().unwrap().len(), 24);
        assert!(WebhookSecret::from_plaintext(secret.expose().as_bytes()).is_some());
        assert!(WebhookSecret::from_plaintext(b"whsec_").is_none());
        assert!(WebhookSecret::from_plaintext(b"not a secret").is_none());
    }

    fn stripe_header(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        format!("t={t},v1={}", hex(&mac.finalize().into_bytes()))
    }

    #[test]
    fn stripe_signatures_are_checked_over_the_raw_body_with_a_tolerance() {
        let secret = "whsec_test_secret_0123456789";
        let body = br#"{"id":"evt_1","type":"invoice.paid"}"#;
        let now = 1_700_000_000;
        let good = stripe_header(secret, now, body);
        let check = |header: Option<&str>, body: &[u8], now: i64| verify_stripe(secret, header, body, now, 300);
        assert_eq!(check(Some(&good), body, now), Ok(()));
        assert_eq!(check(Some(&good), body, now + 300), Ok(()));
        assert_eq!(check(Some(&good), body, now + 301), Err(StripeSignatureError::Stale(300)));
        assert_eq!(check(Some(&good), b"{\"id\":\"evt_2\"}", now), Err(StripeSignatureError::Mismatch));
        let other = stripe_header("whsec_another_secret_000000", now, body);
        assert_eq!(check(Some(&other), body, now), Err(StripeSignatureError::Mismatch));
        // Several v1 (Stripe sends two while a secret is rolled): any may match.
        let both = format!("{other},v1={},v0=ignored", good.split("v1=").nth(1).unwrap());
        assert_eq!(check(Some(&both), body, now), Ok(()));
        assert_eq!(check(None, body, now), Err(StripeSignatureError::Missing));
        assert_eq!(check(Some("v1=abc"), body, now), Err(StripeSignatureError::Malformed));
        assert_eq!(check(Some(&format!("t={now}")), body, now), Err(StripeSignatureError::Malformed));
        assert_eq!(check(Some("t=soon,v1=ab"), body, now), Err(StripeSignatureError::Malformed));
    }
}

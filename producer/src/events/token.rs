//! Status links: a signed, expiring token that opens one job's event stream without
//! an API key (a browser's `new EventSource(status_url)`).
//!
//! A token is `{expires}.{r}.{mac}`: the expiry in Unix seconds, `1` when the key that
//! enqueued the job may read arguments and results (`jobs:read_args`, so the stream
//! shows the result) or `0`, and the hex HMAC-SHA256 of `{job id}.{expires}.{r}` under
//! `events.token_secret`. It names no job: the MAC binds it to the one in the path, so
//! the same token on another job's stream, or on any other route, opens nothing.

use chrono::{DateTime, Utc};
use jobs::JobId;
use ring::hmac;

/// What a valid token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The job whose stream it opens.
    pub job: JobId,
    /// Whether the stream shows arguments and results.
    pub read_args: bool,
}

/// Why a token opens nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this form, or signed for another job or with another secret.
    #[error("the status token is not valid for this job")]
    Invalid,
    /// Past its expiry.
    #[error("the status token has expired")]
    Expired,
}

/// Signs and checks status tokens with one secret.
pub struct StatusTokens {
    key: hmac::Key,
    ttl: chrono::Duration,
}

impl std::fmt::Debug for StatusTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl StatusTokens {
    /// Tokens signed with `secret`, valid for `ttl_secs`.
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            ttl: chrono::Duration::seconds(i64::try_from(ttl_secs).unwrap_or(i64::MAX / 1_000)),
        }
    }

    /// Tokens with a random secret (one process only).
    ///
    /// # Errors
    /// When the system's random source fails.
    pub fn random(ttl_secs: u64) -> Result<Self, ring::error::Unspecified> {
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)?;
        Ok(Self::new(&secret, ttl_secs))
    }

    /// A token for `grant`, issued at `now`.
    pub fn sign(&self, grant: Grant, now: DateTime<Utc>) -> String {
        let expires = (now + self.ttl).timestamp();
        let r = u8::from(grant.read_args);
        let mac = hmac::sign(&self.key, message(grant.job, expires, r).as_bytes());
        format!("{expires}.{r}.{}", hex(mac.as_ref()))
    }

    /// What `token` grants on job `job`'s stream at `now`.
    ///
    /// # Errors
    /// [`TokenError::Invalid`] for a malformed or foreign token (checked in constant
    /// time), [`TokenError::Expired`] past its expiry.
    pub fn verify(&self, job: JobId, token: &str, now: DateTime<Utc>) -> Result<Grant, TokenError> {
        let mut parts = token.splitn(3, '.');
        let (Some(expires), Some(r), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Invalid);
        };
        let expires: i64 = expires.parse().map_err(|_| TokenError::Invalid)?;
        let r: u8 = match r {
            "0" => 0,
            "1" => 1,
            _ => return Err(TokenError::Invalid),
        };
        let mac = unhex(mac).ok_or(TokenError::Invalid)?;
        hmac::verify(&self.key, message(job, expires, r).as_bytes(), &mac)
            .map_err(|_| TokenError::Invalid)?;
        if now.timestamp() >= expires {
            return Err(TokenError::Expired);
        }
        Ok(Grant {
            job,
            read_args: r == 1,
        })
    }
}

fn message(job: JobId, expires: i64, r: u8) -> String {
    format!("{job}.{expires}.{r}")
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_token_opens_its_own_job_until_it_expires() {
        let tokens = StatusTokens::new(b"a secret of enough length", 60);
        let job = JobId::new();
        let token = tokens.sign(
            Grant {
                job,
                read_args: true,
            },
            now(),
        );
        assert_eq!(
            tokens.verify(job, &token, now()),
            Ok(Grant {
                job,
                read_args: true
            })
        );
        assert_eq!(
            tokens.verify(job, &token, now() + chrono::Duration::seconds(59)),
            Ok(Grant {
                job,
                read_args: true
            })
        );
        assert_eq!(
            tokens.verify(job, &token, now() + chrono::Duration::seconds(60)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_token_opens_no_other_job_and_no_other_secret_accepts_it() {
        let tokens = StatusTokens::new(b"a secret of enough length", 60);
        let job = JobId::new();
        let token = tokens.sign(
            Grant {
                job,
                read_args: false,
            },
            now(),
        );
        assert_eq!(
            tokens.verify(JobId::new(), &token, now()),
            Err(TokenError::Invalid)
        );
        let other = StatusTokens::new(b"another secret, also long", 60);
        assert_eq!(other.verify(job, &token, now()), Err(TokenError::Invalid));
    }

    #[test]
    fn a_tampered_token_is_invalid_not_expired() {
        let tokens = StatusTokens::new(b"a secret of enough length", 60);
        let job = JobId::new();
        let token = tokens.sign(
            Grant {
                job,
                read_args: false,
            },
            now(),
        );
        // Granting itself the arguments, or more time, breaks the MAC.
        let upgraded = token.replacen(".0.", ".1.", 1);
        assert_eq!(
            tokens.verify(job, &upgraded, now()),
            Err(TokenError::Invalid)
        );
        let (expires, rest) = token.split_once('.').unwrap();
        let later = format!("{}.{rest}", expires.parse::<i64>().unwrap() + 3600);
        assert_eq!(tokens.verify(job, &later, now()), Err(TokenError::Invalid));
        for garbage in ["", "1.2", "x.0.00", "1.0.zz", "1.2.00"] {
            assert_eq!(
                tokens.verify(job, garbage, now()),
                Err(TokenError::Invalid),
                "{garbage}"
            );
        }
    }
}

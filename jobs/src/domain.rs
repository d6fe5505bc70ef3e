//! Validated values the business kinds share: an [`EmailAddress`], a [`Currency`], and
//! money as an integer count of a currency's minor units ([`format_money`]). Each type
//! is built only through its `parse` constructor, so a value that exists is valid.

use std::fmt;

/// Longest address accepted (RFC 5321's limit on a forward path, less its brackets).
const MAX_ADDRESS_LEN: usize = 254;
/// Longest local part (before the `@`), per RFC 5321.
const MAX_LOCAL_LEN: usize = 64;

/// An email address that passed reasonable checks: one `@`, a non-empty local part, a
/// domain with a dot, no whitespace or control characters, at most 254 characters. Not
/// a full RFC 5322 parser: the mail server has the last word.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Checks `text` and wraps it.
    ///
    /// # Errors
    /// What is wrong with it, for a person.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if text.chars().count() > MAX_ADDRESS_LEN {
            return Err(format!("must be at most {MAX_ADDRESS_LEN} characters"));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters".into());
        }
        if text.chars().any(|c| "<>()[],;:\\\"".contains(c)) {
            return Err(
                "must be a bare address like name@example.com, without a display name or quotes"
                    .into(),
            );
        }
        let Some((local, domain)) = text.split_once('@') else {
            return Err("must contain an @".into());
        };
        if domain.contains('@') {
            return Err("must contain exactly one @".into());
        }
        if local.is_empty() || local.chars().count() > MAX_LOCAL_LEN {
            return Err(format!(
                "the part before the @ must be 1 to {MAX_LOCAL_LEN} characters"
            ));
        }
        let labels_ok = domain
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
        if !domain.contains('.') || !labels_ok {
            return Err("the part after the @ must be a domain like example.com".into());
        }
        Ok(Self(text.to_owned()))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An ISO 4217 currency code: three uppercase ASCII letters (`USD`, `EUR`, `JPY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// The default currency of an order that names none.
    pub const USD: Currency = Currency(*b"USD");

    /// Checks `text` and wraps it.
    ///
    /// # Errors
    /// When it is not three uppercase ASCII letters.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err("must be an ISO 4217 code: three uppercase letters, like USD".into()),
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Built only from three ASCII uppercase letters, so always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// How many decimal places the currency's minor unit has (ISO 4217): 0 for `JPY`,
    /// 3 for `KWD`, 2 for most.
    pub fn exponent(&self) -> u32 {
        exponent(self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn exponent(code: &str) -> u32 {
    match code {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// Formats an amount of `currency`'s minor units for people: `3100` USD →
/// `31.00 USD`, `500` JPY → `500 JPY`, `-5` EUR → `-0.05 EUR`.
pub fn format_money(minor: i64, currency: &str) -> String {
    let exp = exponent(currency);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if exp == 0 {
        return format!("{sign}{abs} {currency}");
    }
    let scale = 10u64.pow(exp);
    let width = exp as usize;
    format!("{sign}{}.{:0width$} {currency}", abs / scale, abs % scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasonable_addresses_parse() {
        for ok in [
            "ada@example.com",
            "first.last+tag@mail.example.co.uk",
            "o'brien@example.ie",
        ] {
            assert_eq!(EmailAddress::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn unreasonable_addresses_are_refused_with_a_reason() {
        let long = format!("{}@example.com", "a".repeat(250));
        for (bad, why) in [
            ("", "empty"),
            ("ada", "@"),
            ("ada@@example.com", "exactly one"),
            ("a@b@example.com", "exactly one"),
            ("@example.com", "before the @"),
            ("ada@", "domain"),
            ("ada@localhost", "domain"),
            ("ada@example..com", "domain"),
            ("ada@-example.com", "domain"),
            ("ada lovelace@example.com", "spaces"),
            ("ada@example.com\n", "spaces"),
            ("Ada <ada@example.com>", "spaces"),
            ("<ada@example.com>", "bare address"),
            (long.as_str(), "254"),
        ] {
            let err = EmailAddress::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn currencies_are_three_uppercase_letters() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        for bad in ["usd", "US", "USDD", "U$D", "", "ÜSD"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Currency::USD.to_string(), "USD");
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().exponent(), 3);
    }

    #[test]
    fn money_is_formatted_from_minor_units() {
        assert_eq!(format_money(3100, "USD"), "31.00 USD");
        assert_eq!(format_money(5, "EUR"), "0.05 EUR");
        assert_eq!(format_money(-1205, "EUR"), "-12.05 EUR");
        assert_eq!(format_money(500, "JPY"), "500 JPY");
        assert_eq!(format_money(1234, "KWD"), "1.234 KWD");
        assert_eq!(format_money(0, "USD"), "0.00 USD");
        assert_eq!(format_money(i64::MIN, "USD"), "-92233720368547758.08 USD");
    }
}

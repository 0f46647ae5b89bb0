//! A token that never prints: `secrecy`'s `SecretString`, whose `Debug` shows
//! `[REDACTED]` and which has no `Display`; `ExposeSecret::expose_secret` is
//! the only way to read it, so grep for it to audit every use.

pub(crate) use secrecy::ExposeSecret;

pub type Secret = secrecy::SecretString;

#[cfg(test)]
mod tests {
    use super::{ExposeSecret, Secret};

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::from("kpat_supersecret");
        assert!(!format!("{s:?}").contains("supersecret"));
        assert_eq!(s.expose_secret(), "kpat_supersecret");
    }
}

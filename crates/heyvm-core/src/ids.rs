//! Sandbox ids, names and slugs.

use crate::error::{CoreError, Result};

pub const MAX_NAME_LEN: usize = 63;

/// `sb-` + 8 lowercase hex digits.
pub fn new_sandbox_id() -> String {
    format!("sb-{}", random_hex(4))
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).expect("the OS random source is available");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn looks_like_id(s: &str) -> bool {
    s.len() == 11 && s.starts_with("sb-") && s[3..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Names: 1–63 characters of `[A-Za-z0-9._-]`, starting with a letter or
/// digit, and not shaped like an id (which would shadow another sandbox).
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(CoreError::invalid(format!("name must be 1 to {MAX_NAME_LEN} characters long")));
    }
    let ok_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok_chars || !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(CoreError::invalid(format!(
            "invalid name '{name}': use letters, digits, '.', '_' and '-', starting with a letter or digit"
        )));
    }
    if looks_like_id(name) {
        return Err(CoreError::invalid(format!("name '{name}' looks like a sandbox id; choose another")));
    }
    Ok(())
}

/// Lowercase `[a-z0-9-]`, runs of anything else collapsed to one `-`.
pub fn slugify(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let s = out.trim_matches('-').to_string();
    if s.is_empty() {
        "sandbox".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_product_shape() {
        let id = new_sandbox_id();
        assert!(looks_like_id(&id), "{id}");
        assert_ne!(new_sandbox_id(), id);
    }

    #[test]
    fn names_and_slugs() {
        assert_eq!(slugify("My App_2.0"), "my-app-2-0");
        assert_eq!(slugify("--x--"), "x");
        assert!(validate_name("api-demo").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"a".repeat(64)).is_err());
        assert!(validate_name("../etc").is_err());
        assert!(validate_name("sb-0123abcd").is_err());
        assert!(validate_name("a b").is_err());
    }
}

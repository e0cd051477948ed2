//! Who may make operator-only requests (the emergency stop). Each operator has a name and
//! a token; the file keeps only the token's SHA-256, so whoever reads it learns no token.
//!
//! ```toml
//! [[operator]]
//! name = "gmoc"
//! token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! ```
//!
//! `sluice operator-token NAME` makes a token and prints the entry for it.

use std::collections::HashMap;
use std::path::Path;

use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};

#[derive(Debug, Clone, Default)]
pub struct Operators {
    by_digest: HashMap<[u8; 32], String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    operator: Vec<Entry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    token_sha256: String,
}

fn sha256(token: &str) -> [u8; 32] {
    digest(&SHA256, token.as_bytes())
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Operators {
    pub fn load(path: &Path) -> Result<Operators, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Operators::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Operators, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut ops = Operators::default();
        for (i, e) in file.operator.into_iter().enumerate() {
            if e.name.trim().is_empty() {
                return Err(format!("operator[{i}].name is empty"));
            }
            let d = unhex(&e.token_sha256.to_ascii_lowercase()).ok_or_else(|| {
                format!(
                    "operator[{i}].token_sha256: {:?} is not 64 hexadecimal digits",
                    e.token_sha256
                )
            })?;
            if let Some(other) = ops.by_digest.insert(d, e.name.clone()) {
                return Err(format!(
                    "operator[{i}].token_sha256: {} and {other} have the same token",
                    e.name
                ));
            }
        }
        Ok(ops)
    }

    /// One operator with this token (for tests and examples).
    pub fn with(mut self, name: &str, token: &str) -> Operators {
        self.by_digest.insert(sha256(token), name.to_string());
        self
    }

    /// The operator whose token this is.
    pub fn who(&self, token: &str) -> Option<&str> {
        if token.is_empty() {
            return None;
        }
        self.by_digest.get(&sha256(token)).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// A new random token (256 bits, hex) and the operators-file entry for `name` with it.
pub fn new_token(name: &str) -> (String, String) {
    let mut raw = [0u8; 32];
    SystemRandom::new()
        .fill(&mut raw)
        .expect("the system's random source works");
    let token = hex(&raw);
    let entry = format!(
        "[[operator]]\nname = {}\ntoken_sha256 = \"{}\"\n",
        toml::Value::String(name.to_string()),
        hex(&sha256(&token))
    );
    (token, entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_and_its_entry_name_the_operator_and_nothing_else() {
        let (token, entry) = new_token("gmoc \"night\"");
        let ops = Operators::parse(&entry).unwrap();
        assert_eq!(ops.who(&token), Some("gmoc \"night\""));
        assert!(!entry.contains(&token), "the file keeps only the digest");
        assert_eq!(ops.who(""), None);
        assert_eq!(ops.who(&token[1..]), None);
        let (other, _) = new_token("x");
        assert_ne!(token, other);
    }

    #[test]
    fn bad_files_name_the_field() {
        let e =
            Operators::parse("[[operator]]\nname = \"a\"\ntoken_sha256 = \"xyz\"\n").unwrap_err();
        assert!(e.contains("operator[0].token_sha256"), "{e}");
        let e = Operators::parse("[[operator]]\nname = \"\"\ntoken_sha256 = \"\"\n").unwrap_err();
        assert!(e.contains("operator[0].name"), "{e}");
        let (_, entry) = new_token("a");
        let twice = format!("{entry}{}", entry.replace("name = \"a\"", "name = \"b\""));
        let e = Operators::parse(&twice).unwrap_err();
        assert!(e.contains("same token"), "{e}");
        assert!(
            Operators::parse("[[operators]]\n").is_err(),
            "unknown keys are refused"
        );
    }
}

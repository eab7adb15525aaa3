//! JSON file uploads (`{"file_path": …, "content": "<base64>"}`) read as a
//! stream: the base64 `content` is decoded chunk by chunk into an unlinked
//! spool file, so a 400 MB body costs the daemon a few chunks of memory
//! instead of the body, its string and its decoded bytes at once. Other
//! string fields are kept (each at most [`MAX_FIELD`] bytes); other values
//! are skipped.

use std::collections::HashMap;
use std::io::{Seek, Write};

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use base64::Engine;
use futures_util::StreamExt;

use crate::error::AppError;

/// Longest non-content string field.
const MAX_FIELD: usize = 64 * 1024;
/// Deepest nesting of skipped values.
const MAX_DEPTH: usize = 32;

/// A received upload: the string fields and the decoded content.
pub struct JsonUpload {
    pub fields: HashMap<String, Option<String>>,
    pub content: std::fs::File,
}

impl JsonUpload {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(|v| v.as_deref())
    }

    pub fn required(&self, name: &str) -> Result<&str, AppError> {
        self.field(name).ok_or_else(|| AppError::bad_request("invalid_request", format!("missing field `{name}`")))
    }
}

fn too_large(what: String) -> AppError {
    AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", what)
}

fn bad_json(why: &str) -> AppError {
    AppError::bad_request("invalid_json", format!("malformed JSON: {why}"))
}

/// Reads the body; `max_body` bounds the raw bytes, `max_content` the
/// decoded content.
pub async fn receive(headers: &HeaderMap, body: Body, max_body: u64, max_content: u64) -> Result<JsonUpload, AppError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) {
        return Err(AppError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "expected Content-Type: application/json"));
    }
    let spool = tempfile::tempfile().map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", e.to_string()))?;
    let mut p = Parser {
        state: State::Start,
        key: Vec::new(),
        raw: Vec::new(),
        b64: Vec::new(),
        padded: false,
        depth: 0,
        in_str: false,
        escaped: false,
        fields: HashMap::new(),
        content_seen: false,
        spool,
        size: 0,
        max_content,
    };
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| AppError::bad_request("invalid_body", format!("reading the upload: {e}")))?;
        total += chunk.len() as u64;
        if total > max_body {
            return Err(too_large("request body is too large".into()));
        }
        p.feed(&chunk)?;
    }
    if !matches!(p.state, State::Done) {
        return Err(bad_json("unexpected end of input"));
    }
    if !p.content_seen {
        return Err(AppError::bad_request("invalid_request", "missing field `content`"));
    }
    let mut content = p.spool;
    content.rewind().map_err(heyvm_core::CoreError::from)?;
    Ok(JsonUpload { fields: p.fields, content })
}

enum State {
    Start,
    KeyOrEnd,
    Key,
    Colon,
    Value,
    /// Inside a string value (raw bytes kept for serde to unescape).
    Str,
    /// Inside the base64 content string.
    Content,
    /// A skipped literal, number, object or array.
    Skip,
    After,
    Done,
}

struct Parser {
    state: State,
    key: Vec<u8>,
    raw: Vec<u8>,
    b64: Vec<u8>,
    padded: bool,
    depth: usize,
    in_str: bool,
    escaped: bool,
    fields: HashMap<String, Option<String>>,
    content_seen: bool,
    spool: std::fs::File,
    size: u64,
    max_content: u64,
}

impl Parser {
    fn feed(&mut self, mut data: &[u8]) -> Result<(), AppError> {
        while !data.is_empty() {
            if let State::Content = self.state {
                if self.escaped {
                    // Only `\/` can appear in base64; anything else is invalid.
                    if data[0] != b'/' {
                        return Err(AppError::bad_request("invalid_base64", "content is not valid base64"));
                    }
                    self.b64.push(b'/');
                    self.escaped = false;
                    data = &data[1..];
                    continue;
                }
                // Bulk path: everything up to the closing quote or an escape.
                let n = data.iter().position(|&b| b == b'"' || b == b'\\').unwrap_or(data.len());
                self.b64.extend_from_slice(&data[..n]);
                self.flush_b64(false)?;
                data = &data[n..];
                match data.first() {
                    Some(b'"') => {
                        self.flush_b64(true)?;
                        self.state = State::After;
                        data = &data[1..];
                    }
                    Some(_) => {
                        self.escaped = true;
                        data = &data[1..];
                    }
                    None => {}
                }
                continue;
            }
            let b = data[0];
            data = &data[1..];
            self.step(b)?;
        }
        Ok(())
    }

    fn step(&mut self, b: u8) -> Result<(), AppError> {
        let ws = matches!(b, b' ' | b'\n' | b'\r' | b'\t');
        match self.state {
            State::Start if ws => {}
            State::Start if b == b'{' => self.state = State::KeyOrEnd,
            State::KeyOrEnd if ws => {}
            State::KeyOrEnd if b == b'"' => {
                self.key.clear();
                self.raw = vec![b'"'];
                self.escaped = false;
                self.state = State::Key;
            }
            State::KeyOrEnd if b == b'}' && self.fields.is_empty() && !self.content_seen => self.state = State::Done,
            State::Key => {
                self.raw.push(b);
                if self.raw.len() > 1024 {
                    return Err(bad_json("key too long"));
                }
                if b == b'"' && !self.escaped {
                    let key: String = serde_json::from_slice(&self.raw).map_err(|_| bad_json("bad key"))?;
                    self.key = key.into_bytes();
                    self.state = State::Colon;
                }
                self.escaped = b == b'\\' && !self.escaped;
            }
            State::Colon if ws => {}
            State::Colon if b == b':' => self.state = State::Value,
            State::Value if ws => {}
            State::Value if b == b'"' && self.key == b"content" => {
                if self.content_seen {
                    return Err(bad_json("duplicate field `content`"));
                }
                self.content_seen = true;
                self.escaped = false;
                self.state = State::Content;
            }
            State::Value if b == b'"' => {
                self.raw = vec![b'"'];
                self.escaped = false;
                self.state = State::Str;
            }
            State::Value => {
                self.raw = vec![b];
                self.depth = usize::from(matches!(b, b'{' | b'['));
                self.in_str = false;
                self.escaped = false;
                self.state = State::Skip;
                if self.depth == 0 && matches!(b, b',' | b'}' | b']' | b':') {
                    return Err(bad_json("expected a value"));
                }
            }
            State::Str => {
                self.raw.push(b);
                if self.raw.len() > MAX_FIELD {
                    return Err(too_large(format!("a field is longer than {MAX_FIELD} bytes")));
                }
                if b == b'"' && !self.escaped {
                    let v: String = serde_json::from_slice(&self.raw).map_err(|e| bad_json(&e.to_string()))?;
                    self.fields.insert(String::from_utf8_lossy(&self.key).into_owned(), Some(v));
                    self.state = State::After;
                }
                self.escaped = b == b'\\' && !self.escaped;
            }
            State::Skip => return self.skip(b),
            State::After if ws => {}
            State::After if b == b',' => self.state = State::KeyOrEnd,
            State::After if b == b'}' => self.state = State::Done,
            State::Done if ws => {}
            _ => return Err(bad_json(&format!("unexpected character '{}'", b as char))),
        }
        Ok(())
    }

    /// Skips a non-string value, ending at the `,` or `}` after it.
    fn skip(&mut self, b: u8) -> Result<(), AppError> {
        if self.in_str {
            self.in_str = b != b'"' || self.escaped;
            self.escaped = b == b'\\' && !self.escaped;
            return Ok(());
        }
        match b {
            b'"' => self.in_str = true,
            b'{' | b'[' => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(bad_json("nested too deeply"));
                }
            }
            b'}' | b']' if self.depth > 0 => self.depth -= 1,
            b',' | b'}' if self.depth == 0 => {
                if self.raw.trim_ascii() == b"null" {
                    self.fields.insert(String::from_utf8_lossy(&self.key).into_owned(), None);
                }
                self.state = State::After;
                return self.step(b);
            }
            _ => {}
        }
        if self.raw.len() < 8 {
            self.raw.push(b);
        }
        Ok(())
    }

    /// Decodes whole 4-character groups (all of them at the end).
    fn flush_b64(&mut self, end: bool) -> Result<(), AppError> {
        let n = if end { self.b64.len() } else { self.b64.len() / 4 * 4 };
        if n == 0 || (!end && n < 64 * 1024) {
            return Ok(());
        }
        let bad = |e: base64::DecodeError| AppError::bad_request("invalid_base64", format!("content is not valid base64: {e}"));
        if self.padded {
            return Err(AppError::bad_request("invalid_base64", "content is not valid base64: data after padding"));
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(&self.b64[..n]).map_err(bad)?;
        self.padded = self.b64[..n].contains(&b'=');
        self.b64.drain(..n);
        self.size += bytes.len() as u64;
        if self.size > self.max_content {
            return Err(too_large(format!("file exceeds the upload limit of {} bytes", self.max_content)));
        }
        self.spool.write_all(&bytes).map_err(heyvm_core::CoreError::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    async fn run(body: &str, chunk: usize) -> Result<(HashMap<String, Option<String>>, Vec<u8>), AppError> {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body.as_bytes().chunks(chunk).map(|c| Ok(c.to_vec())).collect();
        let up = receive(&h, Body::from_stream(futures_util::stream::iter(chunks)), 1 << 30, 1 << 20).await?;
        let mut out = Vec::new();
        let mut f = up.content;
        f.read_to_end(&mut out).unwrap();
        Ok((up.fields, out))
    }

    #[tokio::test]
    async fn decodes_in_any_chunking() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&data).replace('/', "\\/");
        let body = format!(
            r#" {{"mount_path": null, "x": {{"a": [1, "}}"]}}, "file_path": "d\u00e9j\u00e0/a.bin", "content": "{b64}", "n": 5}} "#
        );
        for chunk in [1, 3, 4096, 1 << 20] {
            let (fields, out) = run(&body, chunk).await.unwrap_or_else(|e| panic!("chunk {chunk}: {}", e.message));
            assert_eq!(out, data, "chunk {chunk}");
            assert_eq!(fields["file_path"].as_deref(), Some("déjà/a.bin"));
            assert_eq!(fields["mount_path"], None);
        }
    }

    #[tokio::test]
    async fn rejects_bad_input() {
        for (body, code) in [
            (r#"{"file_path": "a", "content": "!!!!"}"#, "invalid_base64"),
            (r#"{"file_path": "a", "content": "QQ==QUJD"}"#, "invalid_base64"),
            (r#"{"file_path": "a", "content": "QUJD""#, "invalid_json"),
            (r#"{"file_path": "a"}"#, "invalid_request"),
            (r#"["file_path"]"#, "invalid_json"),
        ] {
            let e = run(body, 2).await.err().unwrap_or_else(|| panic!("{body} was accepted"));
            assert_eq!(e.code, code, "{body}: {}", e.message);
        }
    }
}

//! The little XML S3 answers with: a ListObjectsV2 page and error bodies.
//! S3's XML is flat and regular, so a tag scanner (with entity decoding)
//! is enough; anything it cannot read is an error, never a guess.

use super::S3Error;

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: u64,
    pub etag: String,
}

pub struct ListPage {
    pub objects: Vec<Object>,
    pub truncated: bool,
    pub next_token: Option<String>,
}

/// The text of the first `<name>…</name>` in `xml`, decoded.
pub fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(decode(&xml[start..end]))
}

/// Every `<name>…</name>` block's inner text, in order (not decoded).
fn blocks<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

/// XML's five predefined entities and numeric character references.
pub fn decode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let Some(end) = after.find(';') else {
            out.push_str(after);
            return out;
        };
        let entity = &after[1..end];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &after[end + 1..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

pub fn parse_list(xml: &str) -> Result<ListPage, S3Error> {
    if !xml.contains("<ListBucketResult") {
        return Err(S3Error::Protocol(format!("not a ListBucketResult: {:.200}", xml)));
    }
    let mut objects = Vec::new();
    for c in blocks(xml, "Contents") {
        let key = tag(c, "Key").ok_or_else(|| S3Error::Protocol("a listed object has no Key".into()))?;
        let size = tag(c, "Size").and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let etag = tag(c, "ETag").unwrap_or_default().trim_matches('"').to_string();
        objects.push(Object { key, size, etag });
    }
    Ok(ListPage {
        objects,
        truncated: tag(xml, "IsTruncated").is_some_and(|t| t.trim() == "true"),
        next_token: tag(xml, "NextContinuationToken"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_listing_page() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p/</Prefix>
<IsTruncated>true</IsTruncated><NextContinuationToken>tok&amp;1</NextContinuationToken>
<Contents><Key>p/a &amp; b.txt</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>&quot;abc&quot;</ETag><Size>12</Size></Contents>
<Contents><Key>p/d/&#x e9;</Key><ETag>"def"</ETag><Size>0</Size></Contents></ListBucketResult>"#;
        let page = parse_list(xml).unwrap();
        assert!(page.truncated);
        assert_eq!(page.next_token.as_deref(), Some("tok&1"));
        assert_eq!(page.objects[0], Object { key: "p/a & b.txt".into(), size: 12, etag: "abc".into() });
        assert_eq!(page.objects[1].etag, "def");
        assert_eq!(decode("&#233;&#xE9;&bogus;"), "éé&bogus;");
        assert!(parse_list("<Error><Code>NoSuchBucket</Code></Error>").is_err());
        assert_eq!(tag("<Error><Code>NoSuchBucket</Code></Error>", "Code").as_deref(), Some("NoSuchBucket"));
    }
}

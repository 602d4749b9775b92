//! Encoding of values for the batch statement: which payloads go to `jsonb`, and tag lists as
//! PostgreSQL array literals.

/// Whether `payload` is JSON that `jsonb` certainly accepts, and may therefore be sent as
/// text for the `payload jsonb` column.
///
/// Conservative: a `false` only means the payload goes to `bytea` alone, which always works.
/// `jsonb` refuses `\u0000` escapes and lone surrogates, and numbers far outside `numeric`'s
/// range; `serde_json` refuses lone surrogates and non-finite doubles itself, and the rest is
/// checked here. (Should the server still refuse a payload, the batch is retried with every
/// payload as `bytea`; see the writer.)
pub(crate) fn is_storable_json(payload: &[u8]) -> bool {
    // Cheap rejections first: binary codecs rarely start like JSON.
    let Some(first) = payload.iter().find(|b| !b.is_ascii_whitespace()) else {
        return false;
    };
    if !matches!(
        first,
        b'{' | b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9'
    ) {
        return false;
    }
    let Ok(text) = std::str::from_utf8(payload) else {
        return false;
    };
    if !numbers_and_escapes_fit(text) {
        return false;
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() && no_lone_surrogates(text)
}

/// Scans the text outside and inside strings: no `\u0000` escape, and every number short
/// (at most 300 characters) with an exponent of at most 3 digits, which `numeric` holds.
fn numbers_and_escapes_fit(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        if bytes.get(i + 1) == Some(&b'u')
                            && bytes.get(i + 2..i + 6) == Some(b"0000".as_slice())
                        {
                            return false;
                        }
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                let mut exponent_digits = None;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    match (bytes[i], exponent_digits.as_mut()) {
                        (b'e' | b'E', _) => exponent_digits = Some(0usize),
                        (b'0'..=b'9', Some(n)) => *n += 1,
                        _ => {}
                    }
                    i += 1;
                }
                if i - start > 300 || exponent_digits.is_some_and(|n| n > 3) {
                    return false;
                }
            }
            _ => i += 1,
        }
    }
    true
}

/// `serde::de::IgnoredAny` skips strings without decoding escapes, so check `\uD8xx`-style
/// surrogate escapes pair up (high then low), as `jsonb` requires.
fn no_lone_surrogates(text: &str) -> bool {
    let bytes = text.as_bytes();
    let hex = |at: usize| -> Option<u16> {
        let s = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
        u16::from_str_radix(s, 16).ok()
    };
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1) == Some(&b'u') {
                let Some(unit) = hex(i + 2) else {
                    return false;
                };
                if (0xD800..0xDC00).contains(&unit) {
                    let low = (bytes.get(i + 6) == Some(&b'\\') && bytes.get(i + 7) == Some(&b'u'))
                        .then(|| hex(i + 8))
                        .flatten();
                    if !low.is_some_and(|l| (0xDC00..0xE000).contains(&l)) {
                        return false;
                    }
                    i += 12;
                    continue;
                }
                if (0xDC00..0xE000).contains(&unit) {
                    return false;
                }
                i += 6;
                continue;
            }
            i += 2;
            continue;
        }
        i += 1;
    }
    true
}

/// `tags` as a PostgreSQL array literal (`{"a","b"}`), every element quoted, so that the
/// server's `text[]` input function reads back exactly these strings.
pub(crate) fn tags_literal(tags: &[String], out: &mut String) {
    out.clear();
    out.push('{');
    for (i, tag) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in tag.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_classification() {
        for ok in [
            &b"{\"json\": true}"[..],
            b"{\"a\":1}",
            b"[1,2,3]",
            b"\"text\"",
            b"true",
            b"null",
            b"-1.5e10",
            b"  {\"nested\": {\"x\": [null, \"\\u00e9\", \"\\ud83d\\ude00\"]}} ",
            b"1e-999",
        ] {
            assert!(
                is_storable_json(ok),
                "{:?} should be JSON",
                String::from_utf8_lossy(ok)
            );
        }
        for bad in [
            &b""[..],
            b"   ",
            b"event 1",
            b"{",
            b"{\"a\":1}{",
            &[0xff, 0xfe, 0x00, 0xc3, 0x28, 0x80],
            b"\"\\u0000\"",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"\\ud800\\u0041\"",
            b"1e2000",
            b"1e-20000",
            b"{\"a\": 1e308}x",
            b"NaN",
        ] {
            assert!(
                !is_storable_json(bad),
                "{:?} should not be JSON",
                String::from_utf8_lossy(bad)
            );
        }
        let long_number = format!("1.{}", "1".repeat(400));
        assert!(!is_storable_json(long_number.as_bytes()));
        // An escaped backslash before "u0000" is not a \u0000 escape.
        assert!(is_storable_json(br#""\\u0000""#));
    }

    #[test]
    fn tag_literals() {
        let mut s = String::new();
        tags_literal(&[], &mut s);
        assert_eq!(s, "{}");
        tags_literal(&["a".into(), "b c".into(), "q\"\\,{}".into()], &mut s);
        assert_eq!(s, r#"{"a","b c","q\"\\,{}"}"#);
    }
}

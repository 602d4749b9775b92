//! The remote envelope: what the payload of a data frame holds when it travels between
//! [`Remote`](crate::Remote)s.
//!
//! ```text
//! 1 Tell          u8 name length, name (UTF-8), body
//! 2 Ask           u64 request id, u8 name length, name, body
//! 3 Reply         u64 request id, body
//! 4 ReplyFailure  u64 request id, reason (UTF-8)
//! ```
//!
//! An `Ask` is a tell whose sender waits for a reply with that id (the body carries the
//! serializable reply handle); the receiver uses the id only to answer failures it detects
//! itself (no such recipient, undecodable body, full mailbox) at once instead of letting the
//! asker time out.

const TELL: u8 = 1;
const ASK: u8 = 2;
const REPLY: u8 = 3;
const REPLY_FAILURE: u8 = 4;

/// Longest recipient name.
pub(crate) const MAX_NAME_LEN: usize = 255;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Envelope<'a> {
    Tell {
        ask: Option<u64>,
        name: &'a str,
        body: &'a [u8],
    },
    Reply {
        id: u64,
        body: &'a [u8],
    },
    ReplyFailure {
        id: u64,
        reason: &'a str,
    },
}

/// Writes a tell (or ask) header; the caller appends the body.
pub(crate) fn put_tell(out: &mut Vec<u8>, ask: Option<u64>, name: &str) {
    match ask {
        None => out.push(TELL),
        Some(id) => {
            out.push(ASK);
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
    debug_assert!(name.len() <= MAX_NAME_LEN);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
}

/// Writes a reply header; the caller appends the body.
pub(crate) fn put_reply(out: &mut Vec<u8>, id: u64) {
    out.push(REPLY);
    out.extend_from_slice(&id.to_be_bytes());
}

pub(crate) fn put_failure(out: &mut Vec<u8>, id: u64, reason: &str) {
    out.push(REPLY_FAILURE);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..reason.len().min(1024)]);
}

/// Parses an envelope; `None` if malformed.
pub(crate) fn parse(payload: &[u8]) -> Option<Envelope<'_>> {
    let (&kind, rest) = payload.split_first()?;
    fn id(rest: &[u8]) -> Option<(u64, &[u8])> {
        let (id, rest) = rest.split_first_chunk::<8>()?;
        Some((u64::from_be_bytes(*id), rest))
    }
    fn named(rest: &[u8]) -> Option<(&str, &[u8])> {
        let (&len, rest) = rest.split_first()?;
        let len = len as usize;
        if rest.len() < len {
            return None;
        }
        let (name, body) = rest.split_at(len);
        Some((std::str::from_utf8(name).ok()?, body))
    }
    match kind {
        TELL => {
            let (name, body) = named(rest)?;
            Some(Envelope::Tell {
                ask: None,
                name,
                body,
            })
        }
        ASK => {
            let (id, rest) = id(rest)?;
            let (name, body) = named(rest)?;
            Some(Envelope::Tell {
                ask: Some(id),
                name,
                body,
            })
        }
        REPLY => {
            let (id, body) = id(rest)?;
            Some(Envelope::Reply { id, body })
        }
        REPLY_FAILURE => {
            let (id, reason) = id(rest)?;
            Some(Envelope::ReplyFailure {
                id,
                reason: std::str::from_utf8(reason).ok()?,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let mut b = Vec::new();
        put_tell(&mut b, None, "echo");
        b.extend_from_slice(b"{}");
        assert_eq!(
            parse(&b),
            Some(Envelope::Tell {
                ask: None,
                name: "echo",
                body: b"{}"
            })
        );
        b.clear();
        put_tell(&mut b, Some(7), "");
        assert_eq!(
            parse(&b),
            Some(Envelope::Tell {
                ask: Some(7),
                name: "",
                body: b""
            })
        );
        b.clear();
        put_reply(&mut b, u64::MAX);
        b.push(1);
        assert_eq!(
            parse(&b),
            Some(Envelope::Reply {
                id: u64::MAX,
                body: &[1]
            })
        );
        b.clear();
        put_failure(&mut b, 3, "no");
        assert_eq!(
            parse(&b),
            Some(Envelope::ReplyFailure {
                id: 3,
                reason: "no"
            })
        );
    }

    #[test]
    fn malformed_envelopes_are_none() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[9]), None);
        assert_eq!(parse(&[TELL, 5, b'a']), None);
        assert_eq!(parse(&[TELL, 1, 0xff]), None);
        assert_eq!(parse(&[REPLY, 1, 2]), None);
    }
}

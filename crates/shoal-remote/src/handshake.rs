//! The handshake every connection runs before it carries messages.
//!
//! The side that dialed (D) and the side that accepted (A) exchange four frames:
//!
//! ```text
//! D → A  Hello      cluster name, D's identity, the address D dialed, nonce_d (32 bytes)
//! A → D  Challenge  A's identity, nonce_a (32 bytes), proof_a
//! D → A  Proof      proof_d
//! A → D  Accept
//! ```
//!
//! `proof_x = HMAC-SHA256(secret, label_x ‖ transcript)` where the transcript is the cluster
//! name (length-prefixed), D's identity, A's identity, nonce_d and nonce_a, and the labels
//! differ per side (so a proof cannot be reflected back). The secret itself never travels;
//! fresh nonces from both sides make a recorded handshake useless for a replay. Each side
//! checks the other's proof (in constant time) and refuses the connection if it is wrong; A
//! also refuses another cluster name, D also refuses an acceptor whose identity names another
//! address than the one dialed. A refusal is a `Reject` frame with a reason, then close.
//!
//! Identities are encoded as an address (1 byte family 4 or 6, the IP bytes, a big-endian
//! u16 port) followed by the big-endian u64 incarnation.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::address::UniqueAddress;
use crate::frame::{self, FrameError, FrameKind, FrameReader, ReadError};

const NONCE_LEN: usize = 32;
const PROOF_LEN: usize = 32;
const DIALER_LABEL: &[u8] = b"shoal-remote/1/dialer-proof";
const ACCEPTOR_LABEL: &[u8] = b"shoal-remote/1/acceptor-proof";

/// Why a handshake failed. The connection is closed either way.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("{0}")]
    Read(#[from] ReadError),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("refused by peer: {0}")]
    Rejected(String),
    #[error("peer is in cluster {theirs:?}, this node in {ours:?}")]
    ClusterMismatch { ours: String, theirs: String },
    #[error("peer failed to prove knowledge of the cluster secret")]
    BadProof,
    #[error("dialed {dialed} but the peer is {claimed}")]
    WrongAddress {
        dialed: SocketAddr,
        claimed: UniqueAddress,
    },
    #[error("peer {0} is quarantined")]
    Quarantined(UniqueAddress),
    #[error("unexpected {0:?} frame during the handshake")]
    Unexpected(FrameKind),
    #[error("no randomness for a nonce: {0}")]
    Random(String),
}

impl From<FrameError> for HandshakeError {
    fn from(e: FrameError) -> Self {
        Self::Read(ReadError::Frame(e))
    }
}

/// What a node proves and presents in handshakes.
pub(crate) struct Credentials {
    pub(crate) me: UniqueAddress,
    pub(crate) cluster: Arc<str>,
    pub(crate) secret: Arc<[u8]>,
}

/// Runs the dialer's side on a fresh connection to `dialed`; returns the acceptor's identity.
pub(crate) async fn dial<S>(
    stream: &mut S,
    reader: &mut FrameReader,
    creds: &Credentials,
    dialed: SocketAddr,
    quarantined: impl Fn(&UniqueAddress) -> bool,
) -> Result<UniqueAddress, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let nonce_d = nonce()?;
    let mut hello = Vec::with_capacity(128);
    put_str(&mut hello, &creds.cluster);
    put_uid(&mut hello, &creds.me);
    put_addr(&mut hello, &dialed);
    hello.extend_from_slice(&nonce_d);
    stream
        .write_all(&frame::encode(FrameKind::Hello, &hello))
        .await?;

    let body = expect(stream, reader, FrameKind::Challenge).await?;
    let mut cur = Cursor::new(&body, "challenge");
    let acceptor = cur.uid()?;
    let nonce_a: [u8; NONCE_LEN] = cur.array()?;
    let proof_a: [u8; PROOF_LEN] = cur.array()?;
    cur.end()?;

    if acceptor.addr != dialed {
        let why = HandshakeError::WrongAddress {
            dialed,
            claimed: acceptor,
        };
        return refuse(stream, why).await;
    }
    let transcript = transcript(&creds.cluster, &creds.me, &acceptor, &nonce_d, &nonce_a);
    if !verify(&creds.secret, ACCEPTOR_LABEL, &transcript, &proof_a) {
        return refuse(stream, HandshakeError::BadProof).await;
    }
    if quarantined(&acceptor) {
        return refuse(stream, HandshakeError::Quarantined(acceptor)).await;
    }
    let proof_d = prove(&creds.secret, DIALER_LABEL, &transcript);
    stream
        .write_all(&frame::encode(FrameKind::Proof, &proof_d))
        .await?;
    let body = expect(stream, reader, FrameKind::Accept).await?;
    Cursor::new(&body, "accept").end()?;
    Ok(acceptor)
}

/// Runs the acceptor's side on a fresh inbound connection; returns the dialer's identity.
pub(crate) async fn accept<S>(
    stream: &mut S,
    reader: &mut FrameReader,
    creds: &Credentials,
    quarantined: impl Fn(&UniqueAddress) -> bool,
) -> Result<UniqueAddress, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let body = expect(stream, reader, FrameKind::Hello).await?;
    let mut cur = Cursor::new(&body, "hello");
    let cluster = cur.str()?;
    let dialer = cur.uid()?;
    let _dialed = cur.addr()?;
    let nonce_d: [u8; NONCE_LEN] = cur.array()?;
    cur.end()?;

    if cluster != *creds.cluster {
        let why = HandshakeError::ClusterMismatch {
            ours: creds.cluster.to_string(),
            theirs: cluster,
        };
        return refuse(stream, why).await;
    }
    if quarantined(&dialer) {
        return refuse(stream, HandshakeError::Quarantined(dialer)).await;
    }
    let nonce_a = nonce()?;
    let transcript = transcript(&creds.cluster, &dialer, &creds.me, &nonce_d, &nonce_a);
    let mut challenge = Vec::with_capacity(96);
    put_uid(&mut challenge, &creds.me);
    challenge.extend_from_slice(&nonce_a);
    challenge.extend_from_slice(&prove(&creds.secret, ACCEPTOR_LABEL, &transcript));
    stream
        .write_all(&frame::encode(FrameKind::Challenge, &challenge))
        .await?;

    let body = expect(stream, reader, FrameKind::Proof).await?;
    let mut cur = Cursor::new(&body, "proof");
    let proof_d: [u8; PROOF_LEN] = cur.array()?;
    cur.end()?;
    if !verify(&creds.secret, DIALER_LABEL, &transcript, &proof_d) {
        return refuse(stream, HandshakeError::BadProof).await;
    }
    stream
        .write_all(&frame::encode(FrameKind::Accept, &[]))
        .await?;
    Ok(dialer)
}

async fn refuse<S, T>(stream: &mut S, why: HandshakeError) -> Result<T, HandshakeError>
where
    S: AsyncWrite + Unpin + ?Sized,
{
    let _ = stream
        .write_all(&frame::encode(
            FrameKind::Reject,
            why.to_string().as_bytes(),
        ))
        .await;
    Err(why)
}

/// Reads the next frame, which must be `kind` (or a `Reject`, which becomes the error).
async fn expect<S>(
    stream: &mut S,
    reader: &mut FrameReader,
    kind: FrameKind,
) -> Result<Vec<u8>, HandshakeError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    loop {
        if let Some((got, range)) = reader.next()? {
            let body = reader.body(range).to_vec();
            return match got {
                k if k == kind => Ok(body),
                FrameKind::Reject => Err(HandshakeError::Rejected(
                    String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
                )),
                other => Err(HandshakeError::Unexpected(other)),
            };
        }
        reader.fill(stream).await?;
    }
}

fn nonce() -> Result<[u8; NONCE_LEN], HandshakeError> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).map_err(|e| HandshakeError::Random(e.to_string()))?;
    Ok(n)
}

fn transcript(
    cluster: &str,
    dialer: &UniqueAddress,
    acceptor: &UniqueAddress,
    nonce_d: &[u8; NONCE_LEN],
    nonce_a: &[u8; NONCE_LEN],
) -> Vec<u8> {
    let mut t = Vec::with_capacity(160);
    put_str(&mut t, cluster);
    put_uid(&mut t, dialer);
    put_uid(&mut t, acceptor);
    t.extend_from_slice(nonce_d);
    t.extend_from_slice(nonce_a);
    t
}

fn mac(secret: &[u8], label: &[u8], transcript: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(label);
    mac.update(transcript);
    mac
}

fn prove(secret: &[u8], label: &[u8], transcript: &[u8]) -> [u8; PROOF_LEN] {
    mac(secret, label, transcript)
        .finalize()
        .into_bytes()
        .into()
}

fn verify(secret: &[u8], label: &[u8], transcript: &[u8], proof: &[u8]) -> bool {
    mac(secret, label, transcript).verify_slice(proof).is_ok()
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

pub(crate) fn put_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

pub(crate) fn put_uid(out: &mut Vec<u8>, uid: &UniqueAddress) {
    put_addr(out, &uid.addr);
    out.extend_from_slice(&uid.incarnation.to_be_bytes());
}

/// Reads handshake bodies; every shortfall is a malformed frame.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.bytes.len() < n {
            return Err(FrameError::Malformed(self.what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn str(&mut self) -> Result<String, FrameError> {
        let len = self.u16()? as usize;
        let what = self.what;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| FrameError::Malformed(what))
    }

    pub(crate) fn addr(&mut self) -> Result<SocketAddr, FrameError> {
        let ip = match self.array::<1>()?[0] {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(FrameError::Malformed(self.what)),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }

    pub(crate) fn uid(&mut self) -> Result<UniqueAddress, FrameError> {
        let addr = self.addr()?;
        let incarnation = u64::from_be_bytes(self.array()?);
        if incarnation == 0 {
            return Err(FrameError::Malformed(self.what));
        }
        Ok(UniqueAddress { addr, incarnation })
    }

    pub(crate) fn end(&self) -> Result<(), FrameError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Malformed(self.what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(port: u16, inc: u64, cluster: &str, secret: &[u8]) -> Credentials {
        Credentials {
            me: UniqueAddress::new(([127, 0, 0, 1], port).into(), inc),
            cluster: cluster.into(),
            secret: secret.into(),
        }
    }

    async fn run(
        d: &Credentials,
        a: &Credentials,
    ) -> (
        Result<UniqueAddress, HandshakeError>,
        Result<UniqueAddress, HandshakeError>,
    ) {
        let (mut ds, mut as_) = tokio::io::duplex(1024);
        let mut dr = FrameReader::new(frame::HANDSHAKE_FRAME_LIMIT);
        let mut ar = FrameReader::new(frame::HANDSHAKE_FRAME_LIMIT);
        let dial = dial(&mut ds, &mut dr, d, a.me.addr, |_| false);
        let accept = async {
            let r = accept(&mut as_, &mut ar, a, |_| false).await;
            drop(as_);
            r
        };
        tokio::join!(dial, accept)
    }

    #[tokio::test]
    async fn matching_credentials_connect_both_ways() {
        let d = creds(1, 11, "c", b"secret");
        let a = creds(2, 22, "c", b"secret");
        let (dr, ar) = run(&d, &a).await;
        assert_eq!(dr.unwrap(), a.me);
        assert_eq!(ar.unwrap(), d.me);
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused_by_both_sides() {
        let d = creds(1, 11, "c", b"secret");
        let a = creds(2, 22, "c", b"other");
        let (dr, ar) = run(&d, &a).await;
        assert!(matches!(dr, Err(HandshakeError::BadProof)), "{dr:?}");
        assert!(matches!(ar, Err(HandshakeError::Rejected(_))), "{ar:?}");
    }

    #[tokio::test]
    async fn another_cluster_is_refused() {
        let d = creds(1, 11, "c1", b"secret");
        let a = creds(2, 22, "c2", b"secret");
        let (dr, ar) = run(&d, &a).await;
        assert!(
            matches!(dr, Err(HandshakeError::Rejected(ref r)) if r.contains("c1")),
            "{dr:?}"
        );
        assert!(
            matches!(ar, Err(HandshakeError::ClusterMismatch { .. })),
            "{ar:?}"
        );
    }

    #[test]
    fn proofs_depend_on_every_input() {
        let u1 = UniqueAddress::new(([127, 0, 0, 1], 1).into(), 1);
        let u2 = UniqueAddress::new(([127, 0, 0, 1], 2).into(), 2);
        let t = transcript("c", &u1, &u2, &[1; 32], &[2; 32]);
        let p = prove(b"s", DIALER_LABEL, &t);
        assert!(verify(b"s", DIALER_LABEL, &t, &p));
        assert!(
            !verify(b"s", ACCEPTOR_LABEL, &t, &p),
            "labels separate the sides"
        );
        assert!(!verify(b"t", DIALER_LABEL, &t, &p));
        let t2 = transcript("c", &u1, &u2, &[1; 32], &[3; 32]);
        assert!(
            !verify(b"s", DIALER_LABEL, &t2, &p),
            "a new nonce needs a new proof"
        );
    }
}

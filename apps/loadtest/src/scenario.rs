//! The scenario (seed 001's Gatling simulation) and the closed-loop virtual users running it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::report::Report;
use crate::stats::KindStats;

/// How many users, for how long, on which pairs.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Virtual users, each with its own keep-alive connection, each sending its next request
    /// as soon as the previous one is answered (a closed loop).
    pub users: usize,
    /// Users start evenly spread over this time (user `i` at `ramp × i / users`).
    pub ramp: Duration,
    /// The whole run, ramp included. No request starts after it; the ones in flight finish.
    pub duration: Duration,
    /// Artifact ids are drawn from `0..artifacts`.
    pub artifacts: u64,
    /// User ids are drawn from `user-0..user-{user_ids}`.
    pub user_ids: u64,
    /// A request not answered within this time counts as an error (and its connection is
    /// replaced).
    pub timeout: Duration,
    /// Seed of the users' random pair choices (same seed, same pairs in the same order per
    /// user).
    pub seed: u64,
    /// Only the reads or only the writes of each iteration (to measure one kind alone);
    /// `None`: the seed's scenario, every API.
    pub only: Option<Kind>,
}

impl Default for Scenario {
    /// The short default: 50 users ramped over 10 s, 30 s in all, 100 × 100 pairs.
    fn default() -> Self {
        Self {
            users: 50,
            ramp: Duration::from_secs(10),
            duration: Duration::from_secs(30),
            artifacts: 100,
            user_ids: 100,
            timeout: Duration::from_secs(10),
            seed: 1,
            only: None,
        }
    }
}

/// Reads ask for state; writes change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `is…` and `getAllStates`.
    Read,
    /// `set…`.
    Write,
}

/// The seed's APIs, in the order each user goes through them for one pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Api {
    /// `POST setArtifactReadByUser`.
    SetRead,
    /// `POST isArtifactReadByUser`.
    IsRead,
    /// `POST setArtifactAddedToUserFeed`.
    AddToFeed,
    /// `POST isArtifactInUserFeed`.
    IsInFeed,
    /// `POST setArtifactRemovedFromUserFeed`.
    RemoveFromFeed,
    /// `POST getAllStates`.
    AllStatesPost,
    /// `GET getAllStates?artifactId=…&userId=…`.
    AllStatesGet,
}

impl Api {
    /// One iteration of a user, in order.
    pub const ALL: [Api; 7] = [
        Api::SetRead,
        Api::IsRead,
        Api::AddToFeed,
        Api::IsInFeed,
        Api::RemoveFromFeed,
        Api::AllStatesPost,
        Api::AllStatesGet,
    ];

    /// Read or write.
    pub fn kind(self) -> Kind {
        match self {
            Api::SetRead | Api::AddToFeed | Api::RemoveFromFeed => Kind::Write,
            Api::IsRead | Api::IsInFeed | Api::AllStatesPost | Api::AllStatesGet => Kind::Read,
        }
    }

    /// The route's name, as in the seed.
    pub fn name(self) -> &'static str {
        match self {
            Api::SetRead => "setArtifactReadByUser",
            Api::IsRead => "isArtifactReadByUser",
            Api::AddToFeed => "setArtifactAddedToUserFeed",
            Api::IsInFeed => "isArtifactInUserFeed",
            Api::RemoveFromFeed => "setArtifactRemovedFromUserFeed",
            Api::AllStatesPost => "getAllStates (POST)",
            Api::AllStatesGet => "getAllStates (GET)",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Api::SetRead => "/artifactState/setArtifactReadByUser",
            Api::IsRead => "/artifactState/isArtifactReadByUser",
            Api::AddToFeed => "/artifactState/setArtifactAddedToUserFeed",
            Api::IsInFeed => "/artifactState/isArtifactInUserFeed",
            Api::RemoveFromFeed => "/artifactState/setArtifactRemovedFromUserFeed",
            Api::AllStatesPost | Api::AllStatesGet => "/artifactState/getAllStates",
        }
    }
}

/// Where the service is: an `http://host:port[/prefix]` URL, resolved once.
#[derive(Debug, Clone)]
pub struct Target {
    addr: SocketAddr,
    host: String,
    prefix: String,
}

impl Target {
    /// The server at `addr`, without a path prefix.
    pub fn from_addr(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            prefix: String::new(),
        }
    }

    /// Parses `http://host[:port][/prefix]` (port 80 by default) and resolves the host.
    pub async fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("the target must be an http:// URL (got {url:?})");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("no host in {url:?}"))?;
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host();
        let addr = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        Ok(Self {
            addr,
            host: authority.as_str().to_owned(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The resolved address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port/prefix`, for reports.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.host, self.prefix)
    }
}

/// Counters shared with the progress display.
#[derive(Default)]
struct Live {
    users: AtomicUsize,
    requests: AtomicU64,
    errors: AtomicU64,
}

/// Runs `scenario` against `target` and returns what it measured. With `progress`, prints
/// one line per second on standard error: elapsed time, active users, requests/s in the last
/// second, errors so far.
pub async fn run(target: &Target, scenario: &Scenario, progress: bool) -> anyhow::Result<Report> {
    if scenario.users == 0 || scenario.artifacts == 0 || scenario.user_ids == 0 {
        bail!("users, artifacts and user ids must all be at least 1");
    }
    if scenario.duration.is_zero() {
        bail!("the duration must be positive");
    }
    // Fail fast, with a clear message, when nothing listens.
    drop(
        TcpStream::connect(target.addr)
            .await
            .with_context(|| format!("cannot connect to {}", target.url()))?,
    );

    let live = Arc::new(Live::default());
    let start = Instant::now();
    let deadline = start + scenario.duration;
    let ramp_end = start + scenario.ramp.min(scenario.duration);

    let progress_task = progress.then(|| tokio::spawn(show_progress(live.clone(), start)));

    let mut users = Vec::with_capacity(scenario.users);
    for i in 0..scenario.users {
        let offset = scenario.ramp.mul_f64(i as f64 / scenario.users as f64);
        let starts_at = start + offset;
        let target = target.clone();
        let scenario = scenario.clone();
        let live = live.clone();
        users.push(tokio::spawn(async move {
            if starts_at >= deadline {
                return UserResult::default();
            }
            tokio::time::sleep_until(starts_at).await;
            live.users.fetch_add(1, Ordering::Relaxed);
            let result = User::new(i, &target, &scenario, live.clone())
                .run(deadline, ramp_end)
                .await;
            live.users.fetch_sub(1, Ordering::Relaxed);
            result
        }));
    }
    let mut total = UserResult::default();
    for user in users {
        total.merge(user.await.context("a virtual user panicked")?);
    }
    let end = Instant::now();
    if let Some(task) = progress_task {
        task.abort();
    }
    Ok(Report {
        target: target.url(),
        scenario: scenario.clone(),
        elapsed: end - start,
        after_ramp: end.saturating_duration_since(ramp_end),
        reads: total.reads,
        writes: total.writes,
        failures: total.failures,
    })
}

async fn show_progress(live: Arc<Live>, start: Instant) {
    let mut ticks =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = (start, 0u64);
    loop {
        let now = ticks.tick().await;
        let requests = live.requests.load(Ordering::Relaxed);
        let rate = (requests - last.1) as f64 / (now - last.0).as_secs_f64();
        last = (now, requests);
        let line = format!(
            "[{:>4.0} s] users {:>5}  requests/s {:>8.0}  requests {:>9}  errors {}\n",
            (now - start).as_secs_f64(),
            live.users.load(Ordering::Relaxed),
            rate,
            requests,
            live.errors.load(Ordering::Relaxed),
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// The most distinct failure descriptions kept; the rest are counted as "other".
const MAX_FAILURE_KINDS: usize = 32;

#[derive(Default)]
struct UserResult {
    reads: KindStats,
    writes: KindStats,
    failures: BTreeMap<String, u64>,
}

impl UserResult {
    fn merge(&mut self, other: UserResult) {
        self.reads.merge(&other.reads);
        self.writes.merge(&other.writes);
        for (what, n) in other.failures {
            self.note_failure(what, n);
        }
    }

    fn note_failure(&mut self, what: String, n: u64) {
        let key = if self.failures.len() < MAX_FAILURE_KINDS || self.failures.contains_key(&what) {
            what
        } else {
            "other failures".to_owned()
        };
        *self.failures.entry(key).or_default() += n;
    }
}

/// Why a request failed.
enum Failure {
    /// Connecting or exchanging failed; the connection is replaced.
    Transport(String),
    /// No answer within the scenario's timeout; the connection is replaced.
    Timeout,
    /// Not a 2xx status.
    Status(u16, String),
    /// A 2xx answer with a body not of the route's shape.
    Body(String),
}

impl Failure {
    fn describe(&self, api: Api) -> String {
        match self {
            Failure::Transport(e) => format!("{}: transport error: {e}", api.name()),
            Failure::Timeout => format!("{}: no answer in time", api.name()),
            Failure::Status(status, body) => format!("{}: status {status}: {body}", api.name()),
            Failure::Body(what) => format!("{}: wrong body: {what}", api.name()),
        }
    }

    fn breaks_connection(&self) -> bool {
        matches!(self, Failure::Transport(_) | Failure::Timeout)
    }
}

/// A small, fast, seedable generator (SplitMix64) for the pair choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for `n` much smaller than 2^64.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct User<'a> {
    target: &'a Target,
    scenario: &'a Scenario,
    live: Arc<Live>,
    rng: Rng,
    connection: Option<SendRequest<Full<Bytes>>>,
    result: UserResult,
}

impl<'a> User<'a> {
    fn new(index: usize, target: &'a Target, scenario: &'a Scenario, live: Arc<Live>) -> Self {
        let mut rng = Rng(scenario.seed ^ (index as u64).wrapping_mul(0xd134_2543_de82_ef95));
        rng.next();
        Self {
            target,
            scenario,
            live,
            rng,
            connection: None,
            result: UserResult::default(),
        }
    }

    async fn run(mut self, deadline: Instant, ramp_end: Instant) -> UserResult {
        'iterations: while Instant::now() < deadline {
            let artifact_id = self.rng.below(self.scenario.artifacts);
            let user_id = format!("user-{}", self.rng.below(self.scenario.user_ids));
            let body = Bytes::from(format!(
                r#"{{"artifactId":{artifact_id},"userId":"{user_id}"}}"#
            ));
            // `artifactRead` never goes back to false: once this user set it, every read of
            // the pair must say so (other users may add to and remove from the feed).
            let mut read_set = false;
            for api in Api::ALL {
                if self.scenario.only.is_some_and(|kind| api.kind() != kind) {
                    continue;
                }
                if Instant::now() >= deadline {
                    break 'iterations;
                }
                let started = Instant::now();
                let outcome = tokio::time::timeout(
                    self.scenario.timeout,
                    self.exchange(api, &body, artifact_id, &user_id),
                )
                .await
                .unwrap_or(Err(Failure::Timeout))
                .and_then(|json| check(api, &json, artifact_id, &user_id, read_set));
                let finished = Instant::now();
                let stats = match api.kind() {
                    Kind::Read => &mut self.result.reads,
                    Kind::Write => &mut self.result.writes,
                };
                stats.requests += 1;
                if finished >= ramp_end {
                    stats.requests_after_ramp += 1;
                }
                self.live.requests.fetch_add(1, Ordering::Relaxed);
                match outcome {
                    Ok(()) => {
                        stats.latencies.record(finished - started);
                        if api == Api::SetRead {
                            read_set = true;
                        }
                    }
                    Err(failure) => {
                        stats.errors += 1;
                        self.live.errors.fetch_add(1, Ordering::Relaxed);
                        self.result.note_failure(failure.describe(api), 1);
                        if failure.breaks_connection() {
                            self.connection = None;
                            // Not a hot loop against a server that is down.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }
        self.result
    }

    /// Sends one request on the user's connection (opened if needed) and parses the answer.
    async fn exchange(
        &mut self,
        api: Api,
        body: &Bytes,
        artifact_id: u64,
        user_id: &str,
    ) -> Result<Value, Failure> {
        let transport = |e: &dyn std::fmt::Display| Failure::Transport(e.to_string());
        if self.connection.as_ref().is_none_or(|c| c.is_closed()) {
            let stream = TcpStream::connect(self.target.addr)
                .await
                .map_err(|e| transport(&e))?;
            stream.set_nodelay(true).map_err(|e| transport(&e))?;
            let (sender, connection) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| transport(&e))?;
            tokio::spawn(async move {
                // Its errors show up in `send_request`.
                let _ = connection.await;
            });
            self.connection = Some(sender);
        }
        let sender = self.connection.as_mut().expect("just opened");
        sender.ready().await.map_err(|e| transport(&e))?;

        let request = Request::builder().header(HOST, self.target.host.as_str());
        let request = if api == Api::AllStatesGet {
            request
                .method(Method::GET)
                .uri(format!(
                    "{}{}?artifactId={artifact_id}&userId={user_id}",
                    self.target.prefix,
                    api.path()
                ))
                .body(Full::new(Bytes::new()))
        } else {
            request
                .method(Method::POST)
                .uri(format!("{}{}", self.target.prefix, api.path()))
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))
        }
        .map_err(|e| Failure::Transport(format!("cannot build the request: {e}")))?;

        let response = sender
            .send_request(request)
            .await
            .map_err(|e| transport(&e))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(&e))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let text: String = text.chars().take(200).collect();
            return Err(Failure::Status(status.as_u16(), text));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            Failure::Body(format!(
                "not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })
    }
}

/// Checks that `json` has the shape of `api`'s answer for the pair, and that `artifactRead`
/// is true when the user set it earlier in this iteration.
fn check(
    api: Api,
    json: &Value,
    artifact_id: u64,
    user_id: &str,
    read_set: bool,
) -> Result<(), Failure> {
    let wrong = |what: &str| Err(Failure::Body(format!("{what} in {json}")));
    let fields = match api.kind() {
        Kind::Write => {
            return if *json == serde_json::json!({ "success": true }) {
                Ok(())
            } else {
                wrong("expected {\"success\":true}")
            };
        }
        Kind::Read if matches!(api, Api::IsRead | Api::IsInFeed) => 3,
        Kind::Read => 4,
    };
    let Some(object) = json.as_object() else {
        return wrong("not an object");
    };
    if object.len() != fields {
        return wrong(&format!("expected {fields} fields"));
    }
    if object.get("artifactId").and_then(Value::as_u64) != Some(artifact_id) {
        return wrong(&format!("expected artifactId {artifact_id}"));
    }
    if object.get("userId").and_then(Value::as_str) != Some(user_id) {
        return wrong(&format!("expected userId {user_id:?}"));
    }
    let flag = |name: &str| object.get(name).and_then(Value::as_bool);
    let read = match api {
        Api::IsRead => flag("answer"),
        Api::IsInFeed => {
            return match flag("answer") {
                Some(_) => Ok(()),
                None => wrong("no boolean answer"),
            };
        }
        _ => {
            if flag("artifactInUserFeed").is_none() {
                return wrong("no boolean artifactInUserFeed");
            }
            flag("artifactRead")
        }
    };
    match read {
        None => wrong("no boolean artifactRead/answer"),
        Some(false) if read_set => wrong("stale read: artifactRead false after it was set"),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_are_checked() {
        let ok = |api, v: Value, read_set| check(api, &v, 7, "user-1", read_set).is_ok();
        assert!(ok(Api::SetRead, json!({"success": true}), false));
        assert!(!ok(Api::SetRead, json!({"success": false}), false));
        assert!(!ok(Api::AddToFeed, json!({"error": "x"}), false));
        assert!(ok(
            Api::IsRead,
            json!({"artifactId": 7, "userId": "user-1", "answer": true}),
            true
        ));
        // Stale: the user set it, then read false.
        assert!(!ok(
            Api::IsRead,
            json!({"artifactId": 7, "userId": "user-1", "answer": false}),
            true
        ));
        // The feed may be changed by other users: false is fine after an add.
        assert!(ok(
            Api::IsInFeed,
            json!({"artifactId": 7, "userId": "user-1", "answer": false}),
            true
        ));
        assert!(!ok(
            Api::IsInFeed,
            json!({"artifactId": 8, "userId": "user-1", "answer": false}),
            true
        ));
        assert!(!ok(
            Api::IsInFeed,
            json!({"artifactId": 7, "userId": "user-1", "answer": "no"}),
            false
        ));
        assert!(ok(
            Api::AllStatesGet,
            json!({"artifactId": 7, "userId": "user-1", "artifactRead": true, "artifactInUserFeed": false}),
            true
        ));
        assert!(!ok(
            Api::AllStatesPost,
            json!({"artifactId": 7, "userId": "user-1", "artifactRead": true}),
            true
        ));
        assert!(!ok(
            Api::AllStatesPost,
            json!({"artifactId": 7, "userId": "user-2", "artifactRead": true, "artifactInUserFeed": true}),
            false
        ));
        assert!(!ok(
            Api::AllStatesPost,
            json!({"artifactId": 7, "userId": "user-1", "artifactRead": false, "artifactInUserFeed": true}),
            true
        ));
    }

    #[test]
    fn every_route_is_read_or_write_as_the_issue_splits_them() {
        let writes: Vec<_> = Api::ALL
            .iter()
            .filter(|a| a.kind() == Kind::Write)
            .map(|a| a.name())
            .collect();
        assert_eq!(
            writes,
            [
                "setArtifactReadByUser",
                "setArtifactAddedToUserFeed",
                "setArtifactRemovedFromUserFeed"
            ]
        );
    }

    #[test]
    fn pair_choices_stay_in_the_pool() {
        let mut rng = Rng(1);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[rng.below(10) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}

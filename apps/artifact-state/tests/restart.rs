//! The real binary on the embedded SQLite store: state survives SIGKILL and restart; SIGTERM
//! shuts down gracefully; the config file is read and flags override it.

mod common;

use std::path::Path;

use common::{Binary, args};

fn single(db: &Path) -> Vec<String> {
    args(&[
        "--http",
        "127.0.0.1:0",
        "--cluster",
        "127.0.0.1:0",
        "--store",
        &format!("sqlite:{}", db.display()),
    ])
}

const PAIRS: [(u64, &str); 4] = [(1, "Michael"), (2, "Michael"), (1, "Ann"), (42, "a:b")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("artifact-state.db");
    let log = dir.path().join("node.log");

    let node = Binary::start("first run", &single(&db), &log);
    let http = node.client();
    http.set("setArtifactReadByUser", 1, "Michael").await;
    http.set("setArtifactAddedToUserFeed", 2, "Michael").await;
    http.set("setArtifactReadByUser", 1, "Ann").await;
    http.set("setArtifactAddedToUserFeed", 1, "Ann").await;
    http.set("setArtifactAddedToUserFeed", 42, "a:b").await;
    http.set("setArtifactRemovedFromUserFeed", 42, "a:b").await;
    let before: Vec<_> = {
        let mut v = Vec::new();
        for (artifact, user) in PAIRS {
            v.push(http.states(artifact, user).await);
        }
        v
    };
    assert_eq!(
        before,
        [(true, false), (false, true), (true, true), (false, false)]
    );
    node.kill();

    let node = Binary::start("after SIGKILL", &single(&db), &log);
    let http = node.client();
    for ((artifact, user), expected) in PAIRS.into_iter().zip(before) {
        // Right after the restart the coordinator still has the shards on the killed
        // incarnation until its removal margin has passed: 503s, then the answer.
        assert_eq!(
            common::states_when_available(&http, artifact, user).await,
            expected,
            "{artifact}/{user}; log:\n{}",
            node.log()
        );
    }
    // And it keeps working.
    http.set("setArtifactReadByUser", 42, "a:b").await;
    assert!(http.is("isArtifactReadByUser", 42, "a:b").await);
    node.kill();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_and_state_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("artifact-state.db");
    let log = dir.path().join("node.log");

    let node = Binary::start("first run", &single(&db), &log);
    let http = node.client();
    http.set("setArtifactAddedToUserFeed", 5, "Eve").await;
    let status = node.terminate();
    assert!(status.success(), "{status:?}; log:\n{}", common::read(&log));
    let text = common::read(&log);
    assert!(text.contains("shutdown requested"), "{text}");
    assert!(text.contains("stopped"), "{text}");

    let node = Binary::start("second run", &single(&db), &log);
    assert_eq!(
        common::states_when_available(&node.client(), 5, "Eve").await,
        (false, true)
    );
    let status = node.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_is_read_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("from-file.db");
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        format!(
            "http = \"127.0.0.1:1\"\ncluster = \"127.0.0.1:0\"\nroles = [\"endpoint\", \"entity\"]\n\
             store = \"sqlite:{}\"\nmanagement = \"127.0.0.1:0\"\n",
            db.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("node.log");
    // The file's HTTP port 1 is overridden by the flag.
    let node = Binary::start(
        "config file",
        &args(&[
            "--config",
            &file.display().to_string(),
            "--http",
            "127.0.0.1:0",
        ]),
        &log,
    );
    assert_ne!(node.http.unwrap().port(), 1);
    node.wait_members("up", common::all_up(1)).await;
    let members = node.members().await;
    let roles = &members["members"][0]["roles"];
    assert_eq!(
        roles,
        &serde_json::json!(["endpoint", "entity"]),
        "{members}"
    );
    node.client().set("setArtifactReadByUser", 9, "Zed").await;
    assert!(db.exists(), "the store named in the file is used");
    node.kill();

    // A broken file is refused with a message and a failure exit.
    std::fs::write(&file, "htp = 1\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_artifact-state"))
        .args(["--config", &file.display().to_string()])
        .env_remove("SHOAL_HTTP")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("node.toml"), "{stderr}");
}

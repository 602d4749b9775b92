//! Wake-ups for live queries from commits of other nodes: `LISTEN` on a dedicated connection,
//! with polling as the fallback.
//!
//! Every batch commit notifies the schema's channel with its highest ordering. This task
//! listens on its own connection and publishes what it hears on the store's commit `watch`,
//! which live streams wait on. Notifications are only a hint: they are lost while the
//! connection is down, so on every (re)connect and then every `poll_interval` the task also
//! reads `journal_offset.last_ordering` and publishes it when it grew.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::error::describe;
use crate::schema::Sql;

/// Raises the published highest committed ordering to `ordering` (never lowers it).
pub(crate) fn publish(committed: &watch::Sender<u64>, ordering: u64) {
    committed.send_if_modified(|known| {
        let newer = ordering > *known;
        if newer {
            *known = ordering;
        }
        newer
    });
}

/// Runs until `stop` fires or its sender is dropped (the store is gone).
pub(crate) async fn run(
    pg: tokio_postgres::Config,
    sql: Arc<Sql>,
    committed: Arc<watch::Sender<u64>>,
    poll_interval: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    let min_backoff = Duration::from_millis(50);
    let mut backoff = min_backoff;
    loop {
        let mut connected = false;
        tokio::select! {
            _ = &mut stop => return,
            error = session(&pg, &sql, &committed, poll_interval, &mut connected) => {
                tracing::debug!(error = %error, "PostgreSQL listener disconnected");
            }
        }
        if connected {
            backoff = min_backoff;
        }
        // A retry delay, not synchronisation: the database is down or unreachable.
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(poll_interval.max(min_backoff));
    }
}

/// One connection's life: `LISTEN`, then poll every `poll_interval` until it fails. Returns
/// why it ended.
async fn session(
    pg: &tokio_postgres::Config,
    sql: &Sql,
    committed: &Arc<watch::Sender<u64>>,
    poll_interval: Duration,
    connected: &mut bool,
) -> String {
    let (client, mut connection) = match pg.connect(NoTls).await {
        Ok(c) => c,
        Err(e) => return describe(&e),
    };
    *connected = true;
    let notified = Arc::clone(committed);
    let mut driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if let Ok(ordering) = n.payload().parse::<u64>() {
                        publish(&notified, ordering);
                    }
                }
                Ok(_) => {}
                Err(e) => return describe(&e),
            }
        }
        "connection closed".to_owned()
    });
    let result = async {
        client
            .batch_execute(&format!("LISTEN {}", sql.channel))
            .await?;
        let poll = client.prepare(&sql.last_ordering).await?;
        let mut tick = tokio::time::interval(poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let last: i64 = client.query_one(&poll, &[]).await?.get(0);
            publish(committed, last.max(0) as u64);
        }
    };
    let error = tokio::select! {
        ended = &mut driver => ended.unwrap_or_else(|e| format!("listener task failed: {e}")),
        r = result => match r {
            Err(e) => describe(&e),
            Ok::<(), tokio_postgres::Error>(()) => "stopped".to_owned(),
        },
    };
    driver.abort();
    error
}

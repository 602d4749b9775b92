//! The stash: bounded, replayed in order ahead of the mailbox, dropped at stop.

use std::time::Duration;

use shoal_actor::{
    Actor, ActorError, ActorRef, ActorSystem, Context, Props, ReplyTo, StashFull, StopReason,
};

const ASK: Duration = Duration::from_secs(5);

/// While closed, stashes `Record`s; `Open` replays them.
#[derive(Default)]
struct Gatekeeper {
    open: bool,
    seen: Vec<u32>,
}

enum Msg {
    Record(u32),
    Open,
    Close,
    /// Stashes `Record(n)` directly and answers with what the stash handed back, if anything.
    TryStash(u32, ReplyTo<Option<u32>>),
    StashLen(ReplyTo<usize>),
    Seen(ReplyTo<Vec<u32>>),
    /// Stashes `Record(n)` and immediately replays the stash.
    StashAndUnstash(u32),
}

impl Actor for Gatekeeper {
    type Msg = Msg;

    async fn handle(&mut self, ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
        match msg {
            Msg::Record(n) if !self.open => {
                if let Err(StashFull(_)) = ctx.stash(Msg::Record(n)) {
                    return Err(ActorError::new("stash full"));
                }
            }
            Msg::Record(n) => self.seen.push(n),
            Msg::Open => {
                self.open = true;
                ctx.unstash_all();
            }
            Msg::Close => self.open = false,
            Msg::TryStash(n, reply) => {
                let refused = match ctx.stash(Msg::Record(n)) {
                    Ok(()) => None,
                    Err(StashFull(Msg::Record(m))) => Some(m),
                    Err(StashFull(_)) => panic!("handed back a different message"),
                };
                reply.send(refused);
            }
            Msg::StashLen(reply) => {
                reply.send(ctx.stash_len());
            }
            Msg::Seen(reply) => {
                reply.send(self.seen.clone());
            }
            Msg::StashAndUnstash(n) => {
                let _ = ctx.stash(Msg::Record(n));
                ctx.unstash_all();
            }
        }
        Ok(())
    }
}

fn spawn(system: &ActorSystem, stash_capacity: usize) -> ActorRef<Msg> {
    system.spawn(
        "gatekeeper",
        Props::new(Gatekeeper::default).with_stash_capacity(stash_capacity),
    )
}

async fn seen(actor: &ActorRef<Msg>) -> Vec<u32> {
    actor.ask(Msg::Seen, ASK).await.unwrap()
}

#[tokio::test]
async fn the_stash_is_bounded_and_hands_the_message_back() {
    let system = ActorSystem::new("t");
    let actor = spawn(&system, 2);
    assert_eq!(actor.ask(|r| Msg::TryStash(1, r), ASK).await, Ok(None));
    assert_eq!(actor.ask(|r| Msg::TryStash(2, r), ASK).await, Ok(None));
    assert_eq!(actor.ask(|r| Msg::TryStash(3, r), ASK).await, Ok(Some(3)));
    assert_eq!(actor.ask(Msg::StashLen, ASK).await, Ok(2));
    actor.tell(Msg::Open).unwrap();
    assert_eq!(seen(&actor).await, vec![1, 2]);
    assert_eq!(actor.ask(Msg::StashLen, ASK).await, Ok(0));
    system.shutdown().await;
}

#[tokio::test]
async fn unstash_all_replays_in_order_before_the_mailbox() {
    let system = ActorSystem::new("t");
    let actor = spawn(&system, 16);
    // All queued before the actor runs: 4 and 5 are in the mailbox when `Open` replays.
    actor.tell(Msg::Record(1)).unwrap();
    actor.tell(Msg::Record(2)).unwrap();
    actor.tell(Msg::Record(3)).unwrap();
    actor.tell(Msg::Open).unwrap();
    actor.tell(Msg::Record(4)).unwrap();
    actor.tell(Msg::Record(5)).unwrap();
    assert_eq!(seen(&actor).await, vec![1, 2, 3, 4, 5]);

    // Again, after closing.
    actor.tell(Msg::Close).unwrap();
    actor.tell(Msg::Record(6)).unwrap();
    actor.tell(Msg::Record(7)).unwrap();
    actor.tell(Msg::Open).unwrap();
    actor.tell(Msg::Record(8)).unwrap();
    assert_eq!(seen(&actor).await, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    system.shutdown().await;
}

/// Messages stashed while a replay is in progress keep their place: a message re-stashed from
/// the replay is older than the rest of the replay.
#[tokio::test]
async fn unstashing_during_a_replay_keeps_the_order() {
    let system = ActorSystem::new("t");
    let actor = spawn(&system, 16);
    actor.tell(Msg::Record(1)).unwrap();
    actor.tell(Msg::Record(2)).unwrap();
    actor.tell(Msg::Open).unwrap();
    actor.tell(Msg::StashAndUnstash(3)).unwrap();
    actor.tell(Msg::Record(4)).unwrap();
    assert_eq!(seen(&actor).await, vec![1, 2, 3, 4]);
    system.shutdown().await;
}

#[tokio::test]
async fn a_full_stash_can_fail_the_actor() {
    let system = ActorSystem::new("t");
    let actor = spawn(&system, 1);
    actor.tell(Msg::Record(1)).unwrap();
    actor.tell(Msg::Record(2)).unwrap();
    assert_eq!(
        actor.terminated().await,
        StopReason::Failed("stash full".to_owned())
    );
    // The one stashed message is a dead letter.
    assert_eq!(system.dead_letter_count(), 1);
}

#[tokio::test]
async fn stashed_messages_are_dead_letters_at_stop() {
    let system = ActorSystem::new("t");
    let actor = spawn(&system, 16);
    actor.tell(Msg::Record(1)).unwrap();
    actor.tell(Msg::Record(2)).unwrap();
    assert_eq!(actor.ask(Msg::StashLen, ASK).await, Ok(2));
    actor.stop().await;
    actor.terminated().await;
    assert_eq!(system.dead_letter_count(), 2);
}

#[tokio::test]
async fn a_zero_capacity_stash_refuses_everything() {
    let system = ActorSystem::new("t");
    let actor = spawn(&system, 0);
    assert_eq!(actor.ask(|r| Msg::TryStash(9, r), ASK).await, Ok(Some(9)));
    system.shutdown().await;
}

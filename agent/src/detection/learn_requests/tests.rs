use super::*;

fn request(id: &str, duration_s: u64) -> LearnRequest {
    LearnRequest {
        id: id.into(),
        duration_s,
    }
}

#[test]
fn a_request_is_taken_once_reported_while_learned_and_not_started_again_once_done() {
    let board = LearnRequests::new();
    assert_eq!(board.take(), None);
    board.post(&request("a", 60), false);
    assert_eq!(board.current().as_deref(), Some("a"));
    assert_eq!(board.take(), Some(("a".into(), Duration::from_secs(60))));
    assert_eq!(board.take(), None, "taken once");
    // Every heartbeat names it again while it is learned: nothing changes.
    board.post(&request("a", 60), false);
    assert_eq!(board.take(), None);
    board.finish("a");
    assert_eq!(board.current(), None);
    board.post(&request("a", 60), true);
    assert_eq!(board.take(), None, "done already, waiting in the outbox");
    // Delivered (or set aside) and still asked for: it never arrived, learned again.
    board.post(&request("a", 60), false);
    assert_eq!(board.take(), Some(("a".into(), Duration::from_secs(60))));
}

#[test]
fn a_newer_request_replaces_the_one_being_learned_and_durations_are_bounded() {
    let board = LearnRequests::new();
    board.post(&request("a", 60), false);
    let _ = board.take();
    board.post(&request("b", u64::MAX), false);
    assert!(!board.is_current("a"));
    assert_eq!(board.take(), Some(("b".into(), MAX_LEARNING)));
}

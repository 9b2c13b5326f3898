use std::time::Duration;

use super::*;

const WINDOW: Duration = Duration::from_secs(60);

fn at(secs: u64) -> Timestamp {
    Timestamp::from_secs(1_000 + secs)
}

#[test]
fn items_polled_in_rotation_count_once_each_and_a_new_one_reaches_the_threshold_once() {
    let mut d = Distinct::default();
    for round in 0..50 {
        for item in [7, 3, 9] {
            assert!(
                !d.add(at(round % 50), WINDOW, item, 4),
                "3 items are under 4"
            );
        }
    }
    // Out of the usual order, and repeated: still three.
    assert!(!d.add(at(50), WINDOW, 9, 4));
    assert!(!d.add(at(50), WINDOW, 7, 4));
    assert!(!d.add(at(50), WINDOW, 7, 4));
    assert!(
        d.add(at(51), WINDOW, 12, 4),
        "the fourth distinct item fires"
    );
    assert!(!d.add(at(52), WINDOW, 13, 4), "once per window");
}

#[test]
fn a_window_that_ended_starts_counting_again() {
    let mut d = Distinct::default();
    for item in 0..3 {
        d.add(at(0), WINDOW, item, 4);
    }
    // The window opened at 0 has ended at 60: only the items since count.
    for item in 3..6 {
        assert!(!d.add(at(60), WINDOW, item, 4));
    }
    assert!(d.add(at(61), WINDOW, 6, 4));
}

#[test]
fn counter_fires_at_each_multiple_of_the_threshold_within_its_window() {
    let mut c = Counter::default();
    let fired: Vec<bool> = (0..6).map(|_| c.add(at(0), WINDOW, 3)).collect();
    assert_eq!(fired, [false, false, true, false, false, true]);
    assert!(!c.add(at(60), WINDOW, 3), "a new window starts from one");
}

#[test]
fn a_threshold_of_one_fires_at_the_first_item_and_not_again_in_its_window() {
    let mut d = Distinct::default();
    assert!(d.add(at(0), WINDOW, 5, 1));
    assert!(!d.add(at(1), WINDOW, 6, 1), "once per window");
    assert!(d.add(at(60), WINDOW, 6, 1), "and again in the next");
}

use std::sync::atomic::AtomicUsize;

use super::*;

/// A source handing out `total` numbered frames, `per_poll` at a time, then ending (or, if
/// `endless`, going quiet).
struct Numbered {
    next: u32,
    total: u32,
    per_poll: u32,
    endless: bool,
    wait: bool,
    polls: Arc<AtomicUsize>,
}

impl Numbered {
    fn new(total: u32, per_poll: u32) -> Self {
        Self {
            next: 0,
            total,
            per_poll,
            endless: false,
            wait: false,
            polls: Arc::default(),
        }
    }
}

impl LiveSource for Numbered {
    fn describe(&self) -> String {
        "numbered frames".into()
    }

    fn poll(
        &mut self,
        timeout: Duration,
        on_packet: &mut dyn FnMut(&CapturedPacket<'_>),
    ) -> std::io::Result<Polled> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        if self.next >= self.total {
            if self.endless {
                std::thread::sleep(timeout);
                return Ok(Polled::Packets(0));
            }
            return Ok(Polled::End);
        }
        let mut n = 0;
        while n < self.per_poll && self.next < self.total {
            let data = self.next.to_be_bytes();
            on_packet(&CapturedPacket {
                ts: Timestamp::from_secs(u64::from(self.next)),
                link: LinkType::Ethernet,
                data: &data,
                orig_len: 4,
            });
            self.next += 1;
            n += 1;
        }
        Ok(Polled::Packets(n as usize))
    }

    fn kernel_drops(&mut self) -> u64 {
        0
    }

    fn can_wait(&self) -> bool {
        self.wait
    }
}

fn collect(capture: &Capture) -> Vec<u32> {
    let mut seen = Vec::new();
    loop {
        match capture.next_batch(Duration::from_secs(5)) {
            Next::Batch(batch) => {
                for p in batch.packets() {
                    let bytes: [u8; 4] = p.data.try_into().expect("4 bytes");
                    seen.push(u32::from_be_bytes(bytes));
                }
            }
            Next::Idle => panic!("no batch within 5 s"),
            Next::Ended => return seen,
        }
    }
}

fn no_errors() -> Box<dyn Fn(std::io::Error) + Send> {
    Box::new(|e| panic!("capture error: {e}"))
}

#[test]
fn every_packet_arrives_once_and_in_order_then_the_capture_ends() {
    let capture = Capture::start(Box::new(Numbered::new(5000, 7)), no_errors()).unwrap();
    assert_eq!(capture.description(), "numbered frames");
    let seen = collect(&capture);
    assert_eq!(seen, (0..5000).collect::<Vec<_>>());
    assert_eq!(capture.counters().queue_drops.load(Ordering::Relaxed), 0);
}

#[test]
fn a_lone_packet_is_handed_over_without_waiting_for_a_full_batch() {
    let mut source = Numbered::new(1, 1);
    source.endless = true;
    let capture = Capture::start(Box::new(source), no_errors()).unwrap();
    let started = Instant::now();
    match capture.next_batch(Duration::from_secs(5)) {
        Next::Batch(batch) => assert_eq!(batch.len(), 1),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(capture.stop().is_empty());
}

#[test]
fn a_pipeline_that_falls_behind_loses_counted_packets_and_never_blocks_the_capture() {
    let total = (QUEUE_BATCHES as u32 + 20) * BATCH_PACKETS as u32;
    let mut source = Numbered::new(total, BATCH_PACKETS as u32);
    source.endless = true;
    let capture = Capture::start(Box::new(source), no_errors()).unwrap();
    // Nobody reads until the source has produced everything.
    let deadline = Instant::now() + Duration::from_secs(10);
    while capture.counters().queue_drops.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no drop counted");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let dropped = capture.counters().queue_drops.load(Ordering::Relaxed);
    let queued: usize = capture.stop().iter().map(Batch::len).sum();
    assert_eq!(queued as u64 + dropped, u64::from(total));
    assert_eq!(queued, QUEUE_BATCHES * BATCH_PACKETS);
}

#[test]
fn a_source_that_can_wait_loses_nothing_however_slow_the_pipeline() {
    let total = (QUEUE_BATCHES as u32 + 20) * BATCH_PACKETS as u32;
    let mut source = Numbered::new(total, BATCH_PACKETS as u32);
    source.wait = true;
    let capture = Capture::start(Box::new(source), no_errors()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let seen = collect(&capture);
    assert_eq!(seen.len() as u32, total);
    assert_eq!(capture.counters().queue_drops.load(Ordering::Relaxed), 0);
}

#[test]
fn read_errors_are_reported_and_the_capture_goes_on() {
    struct Flaky(u32);
    impl LiveSource for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn poll(
            &mut self,
            _: Duration,
            on_packet: &mut dyn FnMut(&CapturedPacket<'_>),
        ) -> std::io::Result<Polled> {
            self.0 += 1;
            match self.0 {
                1 => Err(std::io::Error::other("interface went down")),
                2 => {
                    on_packet(&CapturedPacket {
                        ts: Timestamp::from_secs(1),
                        link: LinkType::Ethernet,
                        data: &[1, 2, 3, 4],
                        orig_len: 4,
                    });
                    Ok(Polled::Packets(1))
                }
                _ => Ok(Polled::End),
            }
        }
        fn kernel_drops(&mut self) -> u64 {
            0
        }
    }
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = errors.clone();
    let capture = Capture::start(
        Box::new(Flaky(0)),
        Box::new(move |e| sink.lock().unwrap().push(e.to_string())),
    )
    .unwrap();
    assert_eq!(collect(&capture), vec![0x0102_0304]);
    assert_eq!(*errors.lock().unwrap(), vec!["interface went down"]);
    assert_eq!(capture.counters().errors.load(Ordering::Relaxed), 1);
}

use super::*;

fn frame(n: u8, len: usize) -> Vec<u8> {
    vec![n; len]
}

fn packet(ts: u64, data: &[u8]) -> CapturedPacket<'_> {
    CapturedPacket {
        ts: Timestamp::from_nanos(ts),
        link: LinkType::Ethernet,
        data,
        orig_len: len32(data.len()),
    }
}

/// The frames of a pcap, read back with the project's own decoder.
fn read_back(pcap: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut input = InMemory::new(pcap, &[]);
    let mut decoder = CaptureDecoder::new();
    let mut out = Vec::new();
    while let Some(p) = decoder.next_packet(&mut input).unwrap() {
        assert_eq!(p.link, LinkType::Ethernet);
        out.push((p.ts.as_nanos(), p.data.to_vec()));
    }
    out
}

#[test]
fn a_flow_keeps_its_last_frames_and_writes_them_as_a_pcap_its_own_reader_and_the_validator_take() {
    let mut b = EvidenceBuffer::new(Limits {
        per_flow_packets: 4,
        ..Limits::default()
    });
    for n in 0..6u8 {
        b.keep(7, &packet(1_000_000_123 + u64::from(n), &frame(n, 60)));
    }
    b.keep(8, &packet(5, &frame(99, 70)));
    assert_eq!((b.frames(7), b.frames(8)), (4, 1));
    assert_eq!(
        b.cuts(),
        Cuts {
            per_flow: 2,
            total: 0
        }
    );
    let pcap = b.pcap(7).unwrap();
    let frames = read_back(&pcap);
    assert_eq!(frames.len(), 4);
    // The newest four, nanoseconds intact.
    assert_eq!(frames[0], (1_000_000_125, frame(2, 60)));
    assert_eq!(frames[3], (1_000_000_128, frame(5, 60)));
    let summary = validate(&pcap).unwrap();
    assert_eq!(summary.packets, 4);
    assert_eq!(summary.last, Timestamp::from_nanos(1_000_000_128));
    b.forget(7);
    assert_eq!((b.frames(7), b.bytes()), (0, 70));
    assert_eq!(b.pcap(7), None);
}

#[test]
fn the_whole_buffer_stays_within_its_bytes_by_cutting_the_flow_quiet_longest_first() {
    let mut b = EvidenceBuffer::new(Limits {
        per_flow_packets: 100,
        per_flow_bytes: 10_000,
        total_bytes: 1_000,
    });
    // Flow 0 talks, then flow 1, then flow 2 (and flow 1 once more): ten frames fit.
    for n in 0..5u64 {
        b.keep(0, &packet(n, &frame(n as u8, 100)));
    }
    for n in 5..10u64 {
        b.keep(1, &packet(n, &frame(n as u8, 100)));
    }
    for n in 10..17u64 {
        b.keep(2, &packet(n, &frame(n as u8, 100)));
        assert!(b.bytes() <= 1_000);
    }
    // Flow 0, quiet longest, went first (its entry too), then flow 1's two oldest.
    assert_eq!((b.frames(0), b.frames(1), b.frames(2)), (0, 3, 7));
    assert!(!b.flows.contains_key(&0));
    // A new flow's frame: flow 1, quiet longest now, pays for it, not the busy flow 2.
    b.keep(3, &packet(17, &frame(17, 100)));
    assert_eq!((b.frames(1), b.frames(2), b.frames(3)), (2, 7, 1));
    assert_eq!(b.bytes(), 1_000);
    assert_eq!(
        b.cuts(),
        Cuts {
            per_flow: 0,
            total: 8
        }
    );
    let kept: Vec<u64> = read_back(&b.pcap(2).unwrap())
        .iter()
        .map(|(ts, _)| *ts)
        .collect();
    assert_eq!(kept, (10..17).collect::<Vec<_>>());
}

#[test]
fn a_flow_keeps_within_its_bytes_and_a_frame_too_large_is_counted_not_kept() {
    let mut b = EvidenceBuffer::new(Limits {
        per_flow_packets: 100,
        per_flow_bytes: 250,
        total_bytes: 10_000,
    });
    for n in 0..5u8 {
        b.keep(1, &packet(u64::from(n), &frame(n, 100)));
    }
    assert_eq!((b.frames(1), b.bytes()), (2, 200));
    b.keep(1, &packet(9, &frame(9, 251)));
    assert_eq!(b.frames(1), 2);
    assert_eq!(b.cuts().per_flow, 4);
}

#[test]
fn memory_stays_flat_however_many_frames_pass() {
    let mut b = EvidenceBuffer::new(Limits {
        per_flow_packets: 8,
        per_flow_bytes: 4096,
        total_bytes: 4096,
    });
    for n in 0..200_000u64 {
        b.keep(n % 50, &packet(n, &frame(1, 64)));
    }
    assert!(b.bytes() <= 4096);
    assert!(b.spare.len() <= SPARE);
    assert!(b.flows.len() <= 64);
}

#[test]
fn the_validator_refuses_what_an_agent_could_not_have_written_naming_why() {
    let mut b = EvidenceBuffer::new(Limits::default());
    b.keep(1, &packet(1, &frame(1, 60)));
    let good = b.pcap(1).unwrap();
    assert!(validate(&good).is_ok());
    // Cut short.
    let cut = &good[..good.len() - 10];
    assert!(
        matches!(validate(cut), Err(EvidenceError::Unreadable(_))),
        "{:?}",
        validate(cut)
    );
    // A header alone.
    assert_eq!(validate(&good[..24]), Err(EvidenceError::Empty));
    // pcapng, junk, too large.
    assert_eq!(
        validate(&[0x0A, 0x0D, 0x0D, 0x0A, 0, 0, 0, 0]),
        Err(EvidenceError::Pcapng)
    );
    assert!(matches!(
        validate(b"GIF89a..."),
        Err(EvidenceError::Unreadable(_))
    ));
    let huge = vec![0u8; MAX_EVIDENCE_BYTES + 1];
    assert_eq!(
        validate(&huge),
        Err(EvidenceError::TooLarge {
            bytes: MAX_EVIDENCE_BYTES + 1
        })
    );
    // An unknown link type.
    let mut odd = good.clone();
    odd[20..24].copy_from_slice(&147u32.to_le_bytes());
    assert_eq!(validate(&odd), Err(EvidenceError::LinkType(147)));
    // Too many frames.
    let mut many = EvidenceBuffer::new(Limits {
        per_flow_packets: MAX_EVIDENCE_PACKETS + 1,
        ..Limits::default()
    });
    for n in 0..=MAX_EVIDENCE_PACKETS as u64 {
        many.keep(1, &packet(n, &frame(1, 60)));
    }
    assert_eq!(
        validate(&many.pcap(1).unwrap()),
        Err(EvidenceError::TooManyPackets)
    );
}

#[test]
fn a_flow_emptied_by_the_buffers_bound_keeps_writing_its_pcap() {
    let mut b = EvidenceBuffer::new(Limits {
        per_flow_packets: 10,
        per_flow_bytes: 1_000,
        total_bytes: 200,
    });
    // Flow 1's only frame is the oldest in all; flow 1's next frame cuts it.
    b.keep(1, &packet(1, &frame(1, 100)));
    b.keep(2, &packet(2, &frame(2, 100)));
    b.keep(1, &packet(3, &frame(3, 100)));
    assert_eq!((b.frames(1), b.frames(2)), (1, 1));
    assert_eq!(read_back(&b.pcap(1).unwrap()), vec![(3, frame(3, 100))]);
    // A refused frame leaves no entry behind.
    b.keep(9, &packet(4, &frame(9, 201)));
    assert_eq!(b.frames(9), 0);
    assert_eq!(b.pcap(9), None);
    assert!(!b.flows.contains_key(&9));
}

#[test]
fn a_frame_of_the_largest_size_kept_still_writes() {
    let mut b = EvidenceBuffer::new(Limits::default());
    let big = frame(7, 64 << 10);
    b.keep(1, &packet(1, &big));
    let pcap = b.pcap(1).expect("a frame over 65535 bytes writes");
    assert_eq!(read_back(&pcap)[0].1.len(), 64 << 10);
}

/// Found by the `evidence` fuzz target (a timeout): a flow quiet longest, emptied by its own
/// new frame's room, stayed at the front and was asked for frames it no longer had.
#[test]
fn a_flow_emptied_for_its_own_frame_lets_the_others_pay_the_rest() {
    let mut b = EvidenceBuffer::new(Limits {
        per_flow_packets: 10,
        per_flow_bytes: 300,
        total_bytes: 300,
    });
    b.keep(1, &packet(1, &frame(1, 100)));
    b.keep(2, &packet(2, &frame(2, 100)));
    b.keep(1, &packet(3, &frame(3, 250)));
    assert_eq!((b.frames(1), b.frames(2)), (1, 0));
    assert_eq!(b.bytes(), 250);
    assert_eq!(b.cuts().total, 2);
    assert_eq!(read_back(&b.pcap(1).unwrap()), vec![(3, frame(3, 250))]);
    // And the other way round: the newest flow's frame needs every byte.
    b.keep(2, &packet(4, &frame(4, 300)));
    assert_eq!((b.frames(1), b.frames(2), b.bytes()), (0, 1, 300));
}

/// Found in review: a refused frame of another link type moved its flow to the back without
/// the buffer noting it, and the next flow's frames were filed under the refused one's.
#[test]
fn a_frame_of_another_link_type_is_refused_and_the_next_frames_go_to_their_own_flow() {
    let mut b = EvidenceBuffer::new(Limits::default());
    b.keep(1, &packet(1, &frame(1, 60)));
    assert!(b.keep(2, &packet(2, &frame(2, 60))));
    let ip = frame(3, 40);
    let raw = CapturedPacket {
        link: LinkType::RawIp,
        ..packet(3, &ip)
    };
    assert!(!b.keep(1, &raw));
    assert!(b.is_consistent());
    assert!(b.keep(2, &packet(4, &frame(4, 60))));
    assert!(b.is_consistent());
    assert_eq!((b.frames(1), b.frames(2)), (1, 2));
    assert_eq!(
        read_back(&b.pcap(2).unwrap()),
        vec![(2, frame(2, 60)), (4, frame(4, 60))]
    );
}

#[test]
fn a_pcap_until_a_time_holds_the_frames_up_to_it() {
    let mut b = EvidenceBuffer::new(Limits::default());
    for n in 1..=5u64 {
        b.keep(7, &packet(n, &frame(n as u8, 60)));
    }
    let times = |pcap: Vec<u8>| read_back(&pcap).iter().map(|(t, _)| *t).collect::<Vec<_>>();
    assert_eq!(
        times(b.pcap_until(7, Timestamp::from_nanos(3)).unwrap()),
        [1, 2, 3]
    );
    assert_eq!(times(b.pcap(7).unwrap()), [1, 2, 3, 4, 5]);
    assert_eq!(b.pcap_until(7, Timestamp::from_nanos(0)), None);
}

#[test]
fn many_small_flows_are_held_up_to_one_per_kib_the_quietest_going_first() {
    let limits = Limits {
        per_flow_packets: 4,
        per_flow_bytes: 1024,
        total_bytes: 64 << 10,
    };
    let most = max_flows(limits.total_bytes);
    assert_eq!(most, 64);
    let mut b = EvidenceBuffer::new(limits);
    // A SYN flood's worth of one-frame flows.
    for n in 0..1_000u64 {
        assert!(b.keep(n, &packet(n, &frame(1, 60))));
        assert!(b.flows.len() <= most);
    }
    assert!(b.is_consistent());
    assert_eq!(b.cuts().total, 1_000 - most as u64);
    assert_eq!((b.frames(1_000 - most as u64 - 1), b.frames(999)), (0, 1));
}

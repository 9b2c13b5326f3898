use std::io::Write;
use std::time::Instant;

use otwatch_rules::time::Timestamp;
use pcap_file::pcap::{PcapPacket, PcapWriter};

use super::*;
use crate::capture::live::{Capture, Next};

fn frame(n: u8) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[12] = 0x08;
    f[59] = n;
    f
}

#[test]
fn packets_are_handed_out_as_the_writer_writes_them_and_the_stream_ends_when_it_closes() {
    let (reader, writer) = std::io::pipe().unwrap();
    let writer_thread = std::thread::spawn(move || {
        let mut pcap = PcapWriter::new(writer).unwrap();
        pcap.write_packet(&PcapPacket::new(Duration::from_secs(1), 60, &frame(1)))
            .unwrap();
        // The reader must see the first packet before the second is even written.
        std::thread::sleep(Duration::from_millis(1500));
        pcap.write_packet(&PcapPacket::new(Duration::from_secs(2), 60, &frame(2)))
            .unwrap();
        pcap.into_writer().flush().unwrap();
    });
    let capture = CaptureFile::from_reader(Path::new("pipe"), Box::new(reader), 0).unwrap();
    let source = PcapStream {
        capture,
        ended: false,
    };
    let capture = Capture::start(Box::new(source), Box::new(|e| panic!("{e}"))).unwrap();
    let started = Instant::now();
    let first = match capture.next_batch(Duration::from_secs(5)) {
        Next::Batch(b) => b,
        other => panic!("{other:?}"),
    };
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    let p: Vec<_> = first.packets().map(|p| (p.ts, p.data[59])).collect();
    assert_eq!(p, vec![(Timestamp::from_secs(1), 1)]);
    let second = match capture.next_batch(Duration::from_secs(5)) {
        Next::Batch(b) => b,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        second.packets().map(|p| p.data[59]).collect::<Vec<_>>(),
        vec![2]
    );
    assert!(matches!(
        capture.next_batch(Duration::from_secs(5)),
        Next::Ended
    ));
    writer_thread.join().unwrap();
}

#[test]
fn packets_read_are_handed_out_while_the_next_record_is_still_half_written() {
    let mut stream = PcapWriter::new(Vec::new()).unwrap();
    for n in 1..=3 {
        stream
            .write_packet(&PcapPacket::new(Duration::from_secs(1), 60, &frame(n)))
            .unwrap();
    }
    let bytes = stream.into_writer();
    // Two records and the first 10 bytes of the third, then nothing until the first two arrive.
    let cut = 24 + 2 * (16 + 60) + 10;
    let (reader, mut writer) = std::io::pipe().unwrap();
    let (arrived, wait_for_them) = std::sync::mpsc::channel::<()>();
    let writer_thread = std::thread::spawn(move || {
        writer.write_all(&bytes[..cut]).unwrap();
        let _ = wait_for_them.recv_timeout(Duration::from_secs(10));
        writer.write_all(&bytes[cut..]).unwrap();
    });
    let capture = CaptureFile::from_reader(Path::new("pipe"), Box::new(reader), 0).unwrap();
    let source = PcapStream {
        capture,
        ended: false,
    };
    let capture = Capture::start(Box::new(source), Box::new(|e| panic!("{e}"))).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match capture.next_batch(Duration::from_secs(5)) {
            Next::Batch(b) => seen.extend(b.packets().map(|p| p.data[59])),
            other => panic!("after {seen:?}: {other:?}"),
        }
    }
    assert_eq!(seen, vec![1, 2]);
    arrived.send(()).unwrap();
    match capture.next_batch(Duration::from_secs(5)) {
        Next::Batch(b) => assert_eq!(b.packets().map(|p| p.data[59]).collect::<Vec<_>>(), [3]),
        other => panic!("{other:?}"),
    }
    writer_thread.join().unwrap();
}

#[test]
fn a_stream_that_is_not_pcap_is_refused_with_its_first_bytes() {
    let (reader, mut writer) = std::io::pipe().unwrap();
    writer
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    drop(writer);
    let e = CaptureFile::from_reader(Path::new("stdin"), Box::new(reader), 0)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("not a pcap or pcapng file"), "{e}");
}

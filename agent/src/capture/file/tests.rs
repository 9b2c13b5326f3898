use std::borrow::Cow;
use std::time::Duration;

use pcap_file::{DataLink, Endianness, TsResolution};

use super::super::LinkType;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};

use super::*;

/// A packet as read: timestamp in nanoseconds, link type, bytes.
type Read = (u64, LinkType, Vec<u8>);

fn read_all(path: &Path) -> (Vec<Read>, Option<CaptureFileError>) {
    let mut file = CaptureFile::open(path).unwrap();
    let mut packets = Vec::new();
    loop {
        match file.next_packet() {
            Ok(Some(p)) => packets.push((p.ts.as_nanos(), p.link, p.data.to_vec())),
            Ok(None) => return (packets, None),
            Err(e) => return (packets, Some(e)),
        }
    }
}

fn pcap_with(path: &Path, header: PcapHeader, frames: &[(Duration, &[u8])]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::with_header(file, header).unwrap();
    for (ts, data) in frames {
        w.write_packet(&PcapPacket::new(*ts, data.len() as u32, data))
            .unwrap();
    }
}

#[test]
fn classic_pcap_in_both_byte_orders_and_resolutions_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (endianness, resolution)) in [
        (Endianness::Little, TsResolution::MicroSecond),
        (Endianness::Big, TsResolution::MicroSecond),
        (Endianness::Little, TsResolution::NanoSecond),
        (Endianness::Big, TsResolution::NanoSecond),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("{i}.pcap"));
        let header = PcapHeader {
            endianness,
            ts_resolution: resolution,
            datalink: DataLink::LINUX_SLL2,
            ..PcapHeader::default()
        };
        pcap_with(
            &path,
            header,
            &[
                (Duration::new(1_700_000_000, 123_456_000), b"abc"),
                (Duration::new(1_700_000_001, 0), b"defg"),
            ],
        );
        let (packets, error) = read_all(&path);
        assert!(error.is_none(), "{error:?}");
        assert_eq!(
            packets,
            vec![
                (
                    1_700_000_000_123_456_000,
                    LinkType::LinuxSll2,
                    b"abc".to_vec()
                ),
                (
                    1_700_000_001_000_000_000,
                    LinkType::LinuxSll2,
                    b"defg".to_vec()
                ),
            ]
        );
    }
}

#[test]
fn pcapng_timestamps_follow_each_interfaces_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.pcapng");
    let file = std::fs::File::create(&path).unwrap();
    let mut w = PcapNgWriter::new(file).unwrap();
    // Interface 0: default resolution (microseconds). Interface 1: nanoseconds, raw IP.
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 65535,
        options: vec![],
    })
    .unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::RAW,
        snaplen: 65535,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    })
    .unwrap();
    // pcap-file writes the Duration's nanoseconds as the raw timestamp units.
    for (interface_id, raw, data) in [(0u32, 1_500_000u64, b"x"), (1, 2_000_000_001, b"y")] {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id,
            timestamp: Duration::from_nanos(raw),
            original_len: 1,
            data: Cow::Borrowed(data),
            options: vec![],
        })
        .unwrap();
    }
    drop(w);
    let (packets, error) = read_all(&path);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        packets,
        vec![
            (1_500_000_000, LinkType::Ethernet, b"x".to_vec()),
            (2_000_000_001, LinkType::RawIp, b"y".to_vec()),
        ]
    );
}

#[test]
fn capture_larger_than_the_read_buffer_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.pcap");
    let frame = vec![0xabu8; 1500];
    let frames: Vec<(Duration, &[u8])> = (0..1000)
        .map(|i| (Duration::from_millis(i), &frame[..]))
        .collect();
    pcap_with(&path, PcapHeader::default(), &frames);
    let (packets, error) = read_all(&path);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(packets.len(), 1000);
    assert!(packets.iter().all(|(_, _, d)| d.len() == 1500));
}

#[test]
fn truncated_last_record_is_an_error_with_its_offset_after_the_good_packets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.pcap");
    pcap_with(
        &path,
        PcapHeader::default(),
        &[(Duration::ZERO, b"first"), (Duration::ZERO, b"second")],
    );
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let (packets, error) = read_all(&path);
    assert_eq!(packets.len(), 1);
    match error {
        Some(CaptureFileError::Truncated {
            offset,
            needed,
            present,
            ..
        }) => {
            assert_eq!(offset, 24 + 16 + 5);
            assert_eq!(needed, 16 + 6);
            assert_eq!(present, 16 + 3);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_file_is_not_a_capture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.pcap");
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        CaptureFile::open(&path),
        Err(CaptureFileError::UnknownFormat { .. })
    ));
}

#[test]
fn header_only_capture_has_no_packets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.pcap");
    pcap_with(&path, PcapHeader::default(), &[]);
    let (packets, error) = read_all(&path);
    assert!(packets.is_empty() && error.is_none());
}

/// Hands out its bytes in pieces of every size from 1 to 997, cut anywhere, the way a pipe
/// delivers a stream its writer writes field by field.
struct Dribble {
    bytes: Vec<u8>,
    at: usize,
    step: usize,
}

impl io::Read for Dribble {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.step = self
            .step
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        let n = rest.len().min((self.step >> 33) % 997 + 1).min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn a_record_header_arriving_in_pieces_is_waited_for_not_judged_on_stale_bytes() {
    // Frames full of 0xff leave bytes in the read buffer that, taken for a record's length,
    // claim far more than any record may; a header half arrived must not be read past its end.
    let frame = vec![0xffu8; 500];
    let size = |i: usize| 60 + i * 37 % 440;
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    for i in 0..200 {
        let data = &frame[..size(i)];
        w.write_packet(&PcapPacket::new(Duration::ZERO, data.len() as u32, data))
            .unwrap();
    }
    let dribble = Dribble {
        bytes: w.into_writer(),
        at: 0,
        step: 0,
    };
    let mut file = CaptureFile::from_reader(Path::new("pipe"), Box::new(dribble), 0).unwrap();
    let mut count = 0;
    while let Some(p) = file.next_packet().unwrap() {
        assert_eq!(p.data.len(), size(count));
        count += 1;
    }
    assert_eq!(count, 200);
}

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::borrow::Cow;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
use pcap_file::{DataLink, Endianness, TsResolution};

use super::*;

/// A packet as the tests compare them.
type Seen = (u64, LinkType, Vec<u8>, u32);

/// Decodes `bytes` with reads of the sizes `reads` gives in turn.
fn decode(bytes: &[u8], reads: &[usize]) -> (Vec<Seen>, Option<CaptureError>) {
    decode_within(bytes, reads, CaptureDecoder::new())
}

/// Decodes `bytes` with reads of the sizes `reads` gives in turn, with `decoder`.
fn decode_within(
    bytes: &[u8],
    reads: &[usize],
    mut decoder: CaptureDecoder,
) -> (Vec<Seen>, Option<CaptureError>) {
    let mut input = InMemory::new(bytes, reads);
    let mut packets = Vec::new();
    let error = loop {
        match decoder.next_packet(&mut input) {
            Ok(Some(p)) => packets.push((p.ts.as_nanos(), p.link, p.data.to_vec(), p.orig_len)),
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    assert_eq!(input.misuse, 0, "read after the end or into no room");
    (packets, error)
}

fn frames() -> Vec<Vec<u8>> {
    (0..50u8)
        .map(|i| (0..u16::from(i) * 7 + 14).map(|b| b as u8 ^ i).collect())
        .collect()
}

fn classic(endianness: Endianness, ts_resolution: TsResolution) -> Vec<u8> {
    let header = PcapHeader {
        endianness,
        ts_resolution,
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (i, frame) in frames().iter().enumerate() {
        let ts = Duration::new(1_700_000_000 + i as u64, 1_000 * i as u32);
        let packet = PcapPacket::new(ts, frame.len() as u32 + 3, frame);
        writer.write_packet(&packet).unwrap();
    }
    writer.into_writer()
}

fn pcapng() -> Vec<u8> {
    pcapng_in(Endianness::Little)
}

fn pcapng_in(endianness: Endianness) -> Vec<u8> {
    let mut writer = PcapNgWriter::with_endianness(Vec::new(), endianness).unwrap();
    let interface = InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0xFFFF,
        options: vec![],
    };
    writer.write_pcapng_block(interface).unwrap();
    for (i, frame) in frames().iter().enumerate() {
        let block = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::new(1_700_000_000 + i as u64, 1_000 * i as u32),
            original_len: frame.len() as u32,
            data: Cow::Borrowed(frame),
            options: vec![],
        };
        writer.write_pcapng_block(block).unwrap();
    }
    writer.into_inner()
}

#[test]
fn the_same_bytes_give_the_same_packets_however_they_are_split_into_reads() {
    for capture in [
        classic(Endianness::Little, TsResolution::MicroSecond),
        classic(Endianness::Big, TsResolution::NanoSecond),
        pcapng(),
    ] {
        let (whole, error) = decode(&capture, &[CHUNK]);
        assert_eq!(error, None);
        assert_eq!(whole.len(), 50);
        assert_eq!(whole[3].2, frames()[3]);
        for reads in [&[1][..], &[3, 17, 1, 64], &[4095, 2], &[24, 16, 5]] {
            assert_eq!(decode(&capture, reads), (whole.clone(), None), "{reads:?}");
        }
    }
}

#[test]
fn a_capture_cut_anywhere_gives_the_packets_before_the_cut_and_the_same_error() {
    for capture in [
        classic(Endianness::Little, TsResolution::MicroSecond),
        pcapng(),
    ] {
        for cut in [0, 3, 10, 23, 30, capture.len() / 2, capture.len() - 1] {
            let part = &capture[..cut];
            let expected = decode(part, &[CHUNK]);
            assert!(expected.1.is_some(), "cut at {cut}: {expected:?}");
            assert_eq!(decode(part, &[1, 5, 2]), expected, "cut at {cut}");
        }
    }
    let (packets, error) = decode(&[], &[1]);
    assert!(packets.is_empty());
    assert_eq!(error, Some(CaptureError::UnknownFormat { magic: vec![] }));
}

#[test]
fn a_record_claiming_more_than_the_largest_is_corrupt_before_it_is_read() {
    let mut capture = classic(Endianness::Little, TsResolution::MicroSecond);
    let first_record = 24;
    capture[first_record + 8..first_record + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let (packets, error) = decode(&capture, &[100]);
    assert!(packets.is_empty());
    assert!(
        matches!(error, Some(CaptureError::Corrupt { offset: 24, ref reason }) if reason.contains("claims")),
        "{error:?}"
    );
    // The same for a pcapng section header announcing gigabytes.
    let mut capture = pcapng();
    capture[4..8].copy_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
    let (_, error) = decode(&capture, &[100]);
    assert!(
        matches!(error, Some(CaptureError::Corrupt { offset: 0, .. })),
        "{error:?}"
    );
}

#[test]
fn a_section_in_the_other_byte_order_reads_the_same_in_single_bytes() {
    let mut capture = pcapng_in(Endianness::Little);
    capture.extend_from_slice(&pcapng_in(Endianness::Big));
    let whole = decode(&capture, &[]);
    assert_eq!(whole.1, None);
    assert_eq!(whole.0.len(), 100);
    assert_eq!(decode(&capture, &[1]), whole);
    assert_eq!(decode(&capture, &[7, 13]), whole);
}

#[test]
fn a_block_the_parser_cannot_read_whole_is_corrupt_not_waited_for() {
    // A name resolution block of 12 bytes, without even its end record: all of it has
    // arrived, yet the parser asks for more. Waiting would swallow the rest of the input.
    let mut capture = pcapng();
    let at = capture.len();
    capture.extend_from_slice(&[4, 0, 0, 0, 12, 0, 0, 0, 12, 0, 0, 0]);
    capture.extend_from_slice(&pcapng()[28..]);
    let (packets, error) = decode(&capture, &[]);
    assert_eq!(packets.len(), 50);
    assert!(
        matches!(error, Some(CaptureError::Corrupt { offset, .. }) if offset == at as u64),
        "{error:?}"
    );
    assert_eq!(decode(&capture, &[1]), (packets, error));
}

#[test]
fn records_past_the_largest_are_refused_however_the_buffer_grew() {
    // Small limits: a 400-byte record grows the 64-byte buffer; a 900-byte record passes
    // 512 bytes, the largest accepted, whether it arrives whole or in pieces.
    let header = PcapHeader::default();
    let mut writer = PcapWriter::with_header(Vec::new(), header).unwrap();
    for len in [400usize, 100, 900, 50] {
        let frame = vec![7u8; len];
        let packet = PcapPacket::new(Duration::from_secs(1), len as u32, &frame);
        writer.write_packet(&packet).unwrap();
    }
    let capture = writer.into_writer();
    let small = || CaptureDecoder::with_limits(64, 512);
    let whole = decode_within(&capture, &[], small());
    assert_eq!(whole.0.len(), 2, "{:?}", whole.1);
    assert!(
        matches!(whole.1, Some(CaptureError::Corrupt { offset, .. }) if offset == 24 + 416 + 116),
        "{:?}",
        whole.1
    );
    for reads in [&[1][..], &[5, 300], &[1000]] {
        let split = decode_within(&capture, reads, small());
        assert_eq!(split.0, whole.0, "{reads:?}");
        assert!(
            matches!(split.1, Some(CaptureError::Corrupt { offset, .. }) if offset == 24 + 416 + 116),
            "{reads:?}: {:?}",
            split.1
        );
    }
}

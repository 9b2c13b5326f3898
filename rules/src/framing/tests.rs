use super::*;

fn b(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
enum Cut {
    Adu(Option<u16>, Vec<u8>),
    Invalid(&'static str),
    Skipped(usize),
}

fn cut(framer: &mut Framer, deliveries: &[Vec<u8>]) -> Vec<Cut> {
    let mut out = Vec::new();
    for d in deliveries {
        framer.push(d, &mut |f| {
            out.push(match f {
                Frame::Adu {
                    transaction_id,
                    pdu,
                    ..
                } => Cut::Adu(transaction_id, pdu.to_vec()),
                Frame::Invalid { error, .. } => Cut::Invalid(error.kind()),
                Frame::Skipped { bytes } => Cut::Skipped(bytes),
            })
        });
    }
    out
}

const READ_1: &str = "0001 0000 0006 01 03 0000 000a";
const READ_2: &str = "0002 0000 0006 01 03 0064 0002";

#[test]
fn several_adus_in_one_segment_are_all_framed() {
    let mut f = Framer::new(Encapsulation::Mbap, Direction::ToServer);
    let got = cut(&mut f, &[b(&format!("{READ_1}{READ_2}"))]);
    assert_eq!(
        got,
        vec![
            Cut::Adu(Some(1), b("03 0000 000a")),
            Cut::Adu(Some(2), b("03 0064 0002"))
        ]
    );
}

#[test]
fn one_adu_across_segments_is_joined() {
    let mut f = Framer::new(Encapsulation::Mbap, Direction::ToServer);
    let whole = b(READ_1);
    let got = cut(
        &mut f,
        &[
            whole[..3].to_vec(),
            whole[3..9].to_vec(),
            whole[9..].to_vec(),
        ],
    );
    assert_eq!(got, vec![Cut::Adu(Some(1), b("03 0000 000a"))]);
    assert_eq!(f.pending(), 0);
}

#[test]
fn invalid_header_is_reported_and_next_segment_is_decoded() {
    let mut f = Framer::new(Encapsulation::Mbap, Direction::ToServer);
    let got = cut(&mut f, &[b("0001 0010 0006 0a 0100010003"), b(READ_2)]);
    assert_eq!(
        got,
        vec![
            Cut::Invalid("invalid_protocol_id"),
            Cut::Skipped(12),
            Cut::Adu(Some(2), b("03 0064 0002"))
        ]
    );
}

#[test]
fn invalid_header_followed_by_valid_adu_in_the_same_segment_resumes_there() {
    let mut f = Framer::new(Encapsulation::Mbap, Direction::ToServer);
    let got = cut(&mut f, &[b(&format!("0001 0000 8804 0a 01 ff {READ_2}"))]);
    assert_eq!(
        got,
        vec![
            Cut::Invalid("length_too_large"),
            Cut::Skipped(9),
            Cut::Adu(Some(2), b("03 0064 0002"))
        ]
    );
}

#[test]
fn after_a_gap_the_framer_resynchronises_on_the_next_plausible_header() {
    let mut f = Framer::new(Encapsulation::Mbap, Direction::ToServer);
    let whole = b(READ_1);
    f.push(&whole[..5], &mut |_| {});
    let mut out = Vec::new();
    f.gap(&mut |fr| out.push(format!("{fr:?}")));
    let got = cut(&mut f, &[b(&format!("000a {READ_2}"))]);
    assert_eq!(out.len(), 1, "the partial frame is reported skipped");
    assert_eq!(
        got,
        vec![Cut::Skipped(2), Cut::Adu(Some(2), b("03 0064 0002"))]
    );
}

#[test]
fn incomplete_frame_at_stream_end_is_a_length_mismatch() {
    let mut f = Framer::new(Encapsulation::Mbap, Direction::ToServer);
    f.push(&b("0001 0000 0006 01 03"), &mut |_| {});
    let mut errors = Vec::new();
    f.finish(&mut |fr| {
        if let Frame::Invalid { error, .. } = fr {
            errors.push(error)
        }
    });
    assert_eq!(
        errors,
        vec![DecodeError::LengthMismatch {
            declared: 6,
            present: 2
        }]
    );
}

#[test]
fn rtu_frames_are_cut_by_crc() {
    let mut f = Framer::new(Encapsulation::Rtu, Direction::ToServer);
    let mut second = b("01 06 0001 0003");
    second.extend_from_slice(&crate::modbus::crc16(&second).to_le_bytes());
    let mut stream = b("01 03 0000 000a c5cd");
    stream.extend_from_slice(&second);
    let got = cut(&mut f, &[stream]);
    assert_eq!(
        got,
        vec![
            Cut::Adu(None, b("03 0000 000a")),
            Cut::Adu(None, b("06 0001 0003"))
        ]
    );
}

#[test]
fn probe_recognises_mbap_on_any_port_when_the_frame_is_complete() {
    assert_eq!(
        probe(&b(READ_1), Direction::ToServer, false),
        Probe::Modbus {
            encapsulation: Encapsulation::Mbap,
            skip: 0
        }
    );
}

#[test]
fn probe_rejects_other_protocols() {
    let tls = b("16 0301 00f4 01 0000f0 0303 5b3c");
    assert_eq!(probe(&tls, Direction::ToServer, true), Probe::NotModbus);
    let http = b"GET / HTTP/1.1\r\nHost: plc\r\n\r\n".to_vec();
    assert_eq!(probe(&http, Direction::ToServer, false), Probe::NotModbus);
}

#[test]
fn probe_off_the_modbus_port_requires_a_decodable_pdu() {
    // Valid-looking header but function 3 with a quantity of zero.
    let bad = b("0001 0000 0006 01 03 0000 0000");
    assert_eq!(probe(&bad, Direction::ToServer, false), Probe::NotModbus);
    assert!(matches!(
        probe(&bad, Direction::ToServer, true),
        Probe::Modbus { .. }
    ));
}

#[test]
fn probe_waits_for_a_partial_first_frame_off_the_modbus_port() {
    let whole = b(READ_1);
    assert_eq!(
        probe(&whole[..9], Direction::ToServer, false),
        Probe::NeedMore
    );
}

#[test]
fn probe_finds_a_frame_boundary_in_a_mid_stream_pickup_on_the_modbus_port() {
    let stream = b(&format!("000a {READ_2}"));
    assert_eq!(
        probe(&stream, Direction::ToServer, true),
        Probe::Modbus {
            encapsulation: Encapsulation::Mbap,
            skip: 2
        }
    );
}

#[test]
fn probe_picks_up_mid_stream_before_a_frame_too_large_for_the_probe_to_hold() {
    // The last 20 bytes of one response, then a read of 125 registers (259 bytes), cut where a
    // probe stops holding bytes: no run of whole frames, yet plainly Modbus.
    let mut large = b("0007 0000 00fd 01 03 fa");
    large.extend_from_slice(&[0x11; 250]);
    let mut stream = vec![0x22; 20];
    stream.extend_from_slice(&large);
    assert_eq!(
        probe(&stream[..PROBE_LIMIT], Direction::ToClient, true),
        Probe::Modbus {
            encapsulation: Encapsulation::Mbap,
            skip: 20
        }
    );
    // With fewer bytes, the probe waits for more; off the Modbus port it never guesses.
    assert_eq!(
        probe(&stream[..120], Direction::ToClient, true),
        Probe::NeedMore
    );
    assert_eq!(
        probe(&stream[..PROBE_LIMIT], Direction::ToClient, false),
        Probe::NotModbus
    );
}

#[test]
fn probe_recognises_rtu_over_tcp() {
    assert_eq!(
        probe(&b("01 03 0000 000a c5cd"), Direction::ToServer, false),
        Probe::Modbus {
            encapsulation: Encapsulation::Rtu,
            skip: 0
        }
    );
}

#[test]
fn probe_on_the_modbus_port_treats_a_bad_length_as_an_attack_on_modbus() {
    assert!(matches!(
        probe(&b("0001 0000 8804 0507 0809"), Direction::ToServer, true),
        Probe::Modbus { .. }
    ));
}

/// 8,192 minimal MBAP frames (8 bytes each) and then a header that is not one: every offset
/// starts a chain of frames that runs almost to the end before failing.
fn frames_ending_in_garbage() -> Vec<u8> {
    let mut bytes = b("0000 0000 0002 01 03").repeat(8192);
    bytes.extend_from_slice(&b("ffff ffff ffff ff"));
    bytes
}

#[test]
fn every_offset_of_a_hostile_delivery_is_judged_once_not_once_per_chain_through_it() {
    let bytes = frames_ending_in_garbage();
    let mut chains = Chains::new(&bytes, Encapsulation::Mbap, Direction::ToServer);
    // Up to the garbage, no offset tiles (past it, fewer bytes than a header are left).
    assert!((0..=bytes.len() - 7).all(|at| !chains.tile_from(at)));
    assert!(
        chains.judged <= bytes.len(),
        "{} frames judged for {} bytes",
        chains.judged,
        bytes.len()
    );
    // Without the garbage, with a partial header at the end instead, every frame start tiles.
    let mut bytes = bytes;
    bytes.truncate(bytes.len() - 7);
    bytes.extend_from_slice(&b("0000 00"));
    let mut chains = Chains::new(&bytes, Encapsulation::Mbap, Direction::ToServer);
    assert!((0..bytes.len()).step_by(8).all(|at| chains.tile_from(at)));
    assert!(chains.tile_from(bytes.len()));
    assert!(!chains.tile_from(4), "inside a frame");
}

#[test]
fn a_hostile_delivery_after_a_gap_is_skipped_but_for_a_possible_header_start() {
    let bytes = frames_ending_in_garbage();
    let mut framer = Framer::new(Encapsulation::Mbap, Direction::ToServer);
    framer.gap(&mut |_| {});
    let keep = MAX_ADU_LEN + MBAP_LEN - 1;
    assert_eq!(
        cut(&mut framer, std::slice::from_ref(&bytes)),
        vec![Cut::Skipped(bytes.len() - keep)]
    );
    assert_eq!(framer.pending(), keep);
}

#[test]
fn a_bad_header_before_a_hostile_delivery_skips_all_of_it() {
    let mut bytes = b("0000 0001 0002 01 03");
    bytes.extend_from_slice(&frames_ending_in_garbage());
    let mut framer = Framer::new(Encapsulation::Mbap, Direction::ToServer);
    assert_eq!(
        cut(&mut framer, std::slice::from_ref(&bytes)),
        vec![
            Cut::Invalid("invalid_protocol_id"),
            Cut::Skipped(bytes.len())
        ]
    );
}

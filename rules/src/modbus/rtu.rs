//! Modbus RTU frames carried over TCP or UDP ("RTU over TCP"): unit id, PDU and a CRC-16, with
//! no MBAP header.
//!
//! The frame carries no length, so the end of a frame is found where the CRC of what precedes
//! matches and that prefix decodes as a complete PDU. Gateways and cheap serial servers tunnel
//! RTU this way; the mainstream IDS parsers do not decode it.

use crc::{CRC_16_MODBUS, Crc};

use super::{Request, Response};
use crate::Direction;

/// Smallest RTU frame: unit id, function code and two CRC bytes.
pub const MIN_RTU_LEN: usize = 4;
/// Largest RTU frame: unit id, 253-byte PDU and two CRC bytes.
pub const MAX_RTU_LEN: usize = 256;

const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_MODBUS);

/// One RTU frame found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtuFrame<'a> {
    /// The addressed server.
    pub unit_id: u8,
    /// Function code and data, CRC excluded.
    pub pdu: &'a [u8],
    /// Bytes the frame occupied, CRC included.
    pub len: usize,
}

impl<'a> RtuFrame<'a> {
    /// Finds the shortest frame at the start of `bytes` whose CRC matches and whose PDU decodes
    /// completely in the given direction. `None` when no such frame is there (yet).
    pub fn find(bytes: &'a [u8], direction: Direction) -> Option<Self> {
        let limit = bytes.len().min(MAX_RTU_LEN);
        let mut digest = CRC16.digest();
        let (&unit_id, _) = bytes.split_first()?;
        digest.update(&[unit_id]);
        for end in 2..=limit.saturating_sub(2) {
            let body = bytes.get(..end)?;
            let (&last, _) = body.split_last()?;
            digest.update(&[last]);
            let crc = bytes.get(end..end + 2)?;
            if digest.clone().finalize().to_le_bytes() != [crc[0], crc[1]] {
                continue;
            }
            let pdu = body.get(1..)?;
            let decodes = match direction {
                Direction::ToServer => Request::decode(pdu).is_ok(),
                Direction::ToClient => Response::decode(pdu).is_ok(),
            };
            if decodes {
                return Some(Self {
                    unit_id,
                    pdu,
                    len: end + 2,
                });
            }
        }
        None
    }
}

/// The CRC-16/MODBUS of `bytes`, as appended little-endian to an RTU frame.
pub fn crc16(bytes: &[u8]) -> u16 {
    CRC16.checksum(bytes)
}

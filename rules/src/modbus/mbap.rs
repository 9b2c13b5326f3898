//! The Modbus Application Protocol header that frames a PDU on TCP and UDP.

use super::DecodeError;
use super::reader::Reader;

/// Bytes in an MBAP header, unit id included.
pub const MBAP_LEN: usize = 7;
/// Largest valid MBAP length field: a unit id and a 253-byte PDU.
pub const MAX_LENGTH_FIELD: u16 = 254;
/// Largest ADU on the wire: 6 header bytes before the length-counted part plus 254.
pub const MAX_ADU_LEN: usize = 6 + MAX_LENGTH_FIELD as usize;

/// A validated MBAP header: protocol id 0 and a length field in 2..=254.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MbapHeader {
    /// Chosen by the client to match responses with requests.
    pub transaction_id: u16,
    /// Bytes after the length field: unit id plus PDU.
    pub length: u16,
    /// The addressed server behind a gateway, 0 for broadcast, often 255 or 1 on TCP.
    pub unit_id: u8,
}

impl MbapHeader {
    /// Decodes the header at the start of `bytes` (which may hold more).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let transaction_id = r.u16()?;
        let protocol_id = r.u16()?;
        let length = r.u16()?;
        if protocol_id != 0 {
            return Err(DecodeError::InvalidProtocolId(protocol_id));
        }
        if length < 2 {
            return Err(DecodeError::LengthTooSmall(length));
        }
        if length > MAX_LENGTH_FIELD {
            return Err(DecodeError::LengthTooLarge(length));
        }
        let unit_id = r.u8()?;
        Ok(Self {
            transaction_id,
            length,
            unit_id,
        })
    }

    /// Bytes of the whole ADU this header announces.
    pub fn adu_len(&self) -> usize {
        6 + usize::from(self.length)
    }

    /// Bytes of the PDU (function code and data).
    pub fn pdu_len(&self) -> usize {
        usize::from(self.length) - 1
    }
}

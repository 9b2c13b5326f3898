//! Encapsulated Interface Transport (function 43): Read Device Identification (MEI 14) with its
//! objects decoded, and CANopen General Reference (MEI 13) carried opaquely.

use serde::Serialize;

use super::DecodeError;
use super::reader::Reader;

/// MEI type 13: CANopen General Reference.
pub const MEI_CANOPEN: u8 = 0x0D;
/// MEI type 14: Read Device Identification.
pub const MEI_READ_DEVICE_ID: u8 = 0x0E;

/// How much identification a Read Device Identification request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceIdCode {
    /// 1: basic objects (vendor, product code, revision), streamed.
    Basic,
    /// 2: regular objects, streamed.
    Regular,
    /// 3: extended (private) objects, streamed.
    Extended,
    /// 4: one specific object.
    Specific,
}

impl DeviceIdCode {
    fn new(code: u8) -> Result<Self, DecodeError> {
        match code {
            1 => Ok(Self::Basic),
            2 => Ok(Self::Regular),
            3 => Ok(Self::Extended),
            4 => Ok(Self::Specific),
            other => Err(DecodeError::InvalidDeviceIdCode(other)),
        }
    }
}

/// The identity of a device-identification object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub u8);

impl ObjectId {
    /// A stable snake_case name for the standard objects, `private` for the rest.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "vendor_name",
            1 => "product_code",
            2 => "major_minor_revision",
            3 => "vendor_url",
            4 => "product_name",
            5 => "model_name",
            6 => "user_application_name",
            7..=0x7F => "reserved",
            _ => "private",
        }
    }
}

/// A Read Device Identification request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceIdRequest {
    /// Which category of objects is asked for.
    pub code: DeviceIdCode,
    /// The first object asked for.
    pub object_id: ObjectId,
}

impl DeviceIdRequest {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let code = DeviceIdCode::new(r.u8()?)?;
        let object_id = ObjectId(r.u8()?);
        Ok(Self { code, object_id })
    }
}

/// A Read Device Identification response whose object list was checked when decoded, so
/// iterating it cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceIdResponse<'a> {
    /// The category the request asked for.
    pub code: DeviceIdCode,
    /// The conformity level the device claims.
    pub conformity_level: u8,
    /// Whether the device has more objects than fitted in this response.
    pub more_follows: bool,
    /// Where the next request should resume when `more_follows`.
    pub next_object_id: ObjectId,
    count: u8,
    objects: &'a [u8],
}

impl<'a> DeviceIdResponse<'a> {
    pub(crate) fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let code = DeviceIdCode::new(r.u8()?)?;
        let conformity_level = r.u8()?;
        let more_follows = r.u8()? != 0;
        let next_object_id = ObjectId(r.u8()?);
        let count = r.u8()?;
        let objects = r.rest();
        let mut check = Reader::new(objects);
        for _ in 0..count {
            let _id = check.u8()?;
            let len = check.u8()?;
            check.take(usize::from(len))?;
        }
        check.finish()?;
        Ok(Self {
            code,
            conformity_level,
            more_follows,
            next_object_id,
            count,
            objects,
        })
    }

    /// The objects in the order the device sent them: id and raw value.
    pub fn objects(&self) -> DeviceIdObjects<'a> {
        DeviceIdObjects {
            remaining: self.count,
            bytes: self.objects,
        }
    }

    /// The value of one object, if present.
    pub fn object(&self, id: ObjectId) -> Option<&'a [u8]> {
        self.objects().find(|(oid, _)| *oid == id).map(|(_, v)| v)
    }
}

/// Iterator over the objects of a [`DeviceIdResponse`].
#[derive(Debug, Clone)]
pub struct DeviceIdObjects<'a> {
    remaining: u8,
    bytes: &'a [u8],
}

impl<'a> Iterator for DeviceIdObjects<'a> {
    type Item = (ObjectId, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        self.remaining = self.remaining.checked_sub(1)?;
        let (&id, rest) = self.bytes.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let len = usize::from(len).min(rest.len());
        let (value, rest) = rest.split_at(len);
        self.bytes = rest;
        Some((ObjectId(id), value))
    }
}

//! Zero-copy views of register and coil values inside a frame.

/// Big-endian 16-bit register values borrowed from a frame. Always a whole number of registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Registers<'a>(&'a [u8]);

impl<'a> Registers<'a> {
    /// Wraps `bytes` if it holds a whole number of registers.
    pub(crate) fn new(bytes: &'a [u8]) -> Option<Self> {
        bytes.len().is_multiple_of(2).then_some(Self(bytes))
    }

    /// Number of registers.
    pub fn len(&self) -> usize {
        self.0.len() / 2
    }

    /// Whether there are no registers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Register `index`, counted from the first.
    pub fn get(&self, index: usize) -> Option<u16> {
        let start = index.checked_mul(2)?;
        let pair = self.0.get(start..start.checked_add(2)?)?;
        Some(u16::from_be_bytes([pair[0], pair[1]]))
    }

    /// The values in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = u16> + 'a {
        self.0
            .chunks_exact(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

/// Packed coil or discrete-input bits borrowed from a frame, least significant bit first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bits<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> Bits<'a> {
    /// Every bit of `bytes`; a read response does not say how many are meaningful.
    pub(crate) fn all(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            count: bytes.len() * 8,
        }
    }

    /// The first `count` bits of `bytes`, the rest being padding.
    pub(crate) fn new(bytes: &'a [u8], count: usize) -> Self {
        Self {
            bytes,
            count: count.min(bytes.len() * 8),
        }
    }

    /// The same bits narrowed to the `quantity` the request asked for.
    pub fn with_count(self, quantity: usize) -> Self {
        Self::new(self.bytes, quantity)
    }

    /// Number of meaningful bits.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no bits.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bit `index`.
    pub fn get(&self, index: usize) -> Option<bool> {
        if index >= self.count {
            return None;
        }
        self.bytes.get(index / 8).map(|b| b >> (index % 8) & 1 == 1)
    }

    /// The bits in order.
    pub fn iter(&self) -> impl Iterator<Item = bool> + 'a {
        let bytes = self.bytes;
        (0..self.count).map(move |i| bytes.get(i / 8).is_some_and(|b| b >> (i % 8) & 1 == 1))
    }

    /// The raw bytes, padding included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

//! A JSON-lines writer that remembers its first error instead of failing mid-pipeline: the
//! packet path must not stop because a log disk is full, and the error is reported at the end.

use std::io::{self, Write};

use serde::Serialize;

/// Writes one JSON document per line, each line with a single write (so writers sharing a
/// file through [`SharedWriter`] never interleave inside a line).
pub struct JsonLines<W: Write> {
    out: W,
    line: Vec<u8>,
    written: u64,
    error: Option<io::Error>,
}

impl<W: Write> JsonLines<W> {
    /// A writer over `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            line: Vec::with_capacity(1024),
            written: 0,
            error: None,
        }
    }

    /// Appends one record; after a write error, records are dropped until [`Self::finish`].
    pub fn write<T: Serialize>(&mut self, record: &T) {
        if self.error.is_some() {
            return;
        }
        self.line.clear();
        let result = serde_json::to_writer(&mut self.line, record)
            .map_err(io::Error::other)
            .and_then(|()| {
                self.line.push(b'\n');
                self.out.write_all(&self.line)
            });
        match result {
            Ok(()) => self.written += 1,
            Err(e) => self.error = Some(e),
        }
    }

    /// Pushes what is buffered to the file, so a reader (`tail -f`) sees every record written
    /// so far; an error is kept like a write error.
    pub fn flush(&mut self) {
        if self.error.is_none()
            && let Err(e) = self.out.flush()
        {
            self.error = Some(e);
        }
    }

    /// Flushes, returning the number of records or the first error.
    pub fn finish(mut self) -> io::Result<u64> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.flush()?;
        Ok(self.written)
    }
}

/// A buffered file several threads write to: each `write` call goes in whole under a lock.
#[derive(Debug, Clone)]
pub struct SharedWriter(std::sync::Arc<std::sync::Mutex<io::BufWriter<std::fs::File>>>);

impl SharedWriter {
    /// Shares `file`.
    pub fn new(file: std::fs::File) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(
            io::BufWriter::new(file),
        )))
    }
}

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut out = self
            .0
            .lock()
            .map_err(|_| io::Error::other("a writer panicked"))?;
        out.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("a writer panicked"))?
            .flush()
    }
}

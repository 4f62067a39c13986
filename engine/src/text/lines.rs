//! Cutting one byte range of a text file into the lines it owns, fed the
//! file's bytes a chunk at a time (pure CPU work, no I/O).
//!
//! A range `[start, end)` owns every line whose first byte lies in it: it
//! skips the partial line that begins before `start` and reads past `end`
//! to finish its last line (the Hadoop rule), so each line is read exactly
//! once however the files are cut.

use std::sync::Arc;

use arrow::array::{ArrayRef, LargeStringBuilder, StringBuilder};
use arrow::datatypes::DataType;
use bytes::Bytes;

/// Lines per output batch, and the byte size past which a batch is cut
/// early (long lines).
const BATCH_LINES_MAX: usize = 8192;
const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Where a range's reading stands.
#[derive(Debug)]
pub(super) struct Cursor {
    /// Fetched bytes not yet cut into lines, and the file offset of the
    /// first of them.
    pending: Bytes,
    pending_offset: u64,
    /// The file offset of the next byte to fetch.
    next_fetch: u64,
    size: u64,
    end: u64,
    /// Still discarding the line that began before the range.
    skipping: bool,
    /// The start of a line that continues past the fetched bytes, and its
    /// bytes so far.
    carry: Vec<u8>,
    carry_offset: u64,
    done: bool,
}

/// What a cursor needs next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// The bytes `[from, to)` of the file.
    Fetch { from: u64, to: u64 },
    /// The batch is full: hand it on, then call again.
    BatchFull,
    /// Every line of the range is in a batch.
    Done,
}

/// Past the range's end only the last line is finished: small fetches.
const TAIL_CHUNK: u64 = 64 * 1024;

impl Cursor {
    /// A cursor over `[start, end)` of a file of `size` bytes.
    pub(super) fn new(start: u64, end: u64, size: u64) -> Self {
        // The byte before `start` tells whether a line begins at `start`:
        // reading from there, the first line end found closes the line that
        // belongs to the previous range.
        let (next_fetch, skipping) = if start > 0 {
            (start - 1, true)
        } else {
            (0, false)
        };
        Self {
            pending: Bytes::new(),
            pending_offset: next_fetch,
            next_fetch,
            size,
            end: end.min(size),
            skipping,
            carry: Vec::new(),
            carry_offset: 0,
            done: start >= end.min(size),
        }
    }

    /// Takes fetched bytes, which must be the ones the last
    /// [`Step::Fetch`] asked for.
    pub(super) fn feed(&mut self, bytes: Bytes) {
        self.pending_offset = self.next_fetch;
        self.next_fetch += bytes.len() as u64;
        self.pending = bytes;
    }

    /// Cuts pending bytes into lines until the batch is full, more bytes
    /// are needed or the range is done. `Err` is the file offset of a line
    /// end whose line is not UTF-8.
    pub(super) fn advance(&mut self, lines: &mut Lines, chunk: u64) -> Result<Step, u64> {
        loop {
            if self.done {
                return Ok(Step::Done);
            }
            if lines.is_full() {
                return Ok(Step::BatchFull);
            }
            if self.pending.is_empty() {
                if self.next_fetch >= self.end && (self.skipping || self.carry.is_empty()) {
                    // Whatever line begins next begins past the range.
                    self.done = true;
                    continue;
                }
                if self.next_fetch >= self.size {
                    self.finish_at_end_of_file(lines)?;
                    continue;
                }
                let want = if self.next_fetch < self.end {
                    chunk.min(self.end - self.next_fetch)
                } else {
                    TAIL_CHUNK
                };
                let to = (self.next_fetch + want.max(1)).min(self.size);
                return Ok(Step::Fetch {
                    from: self.next_fetch,
                    to,
                });
            }
            self.cut(lines)?;
        }
    }

    /// Cuts at most one line off the pending bytes.
    fn cut(&mut self, lines: &mut Lines) -> Result<(), u64> {
        let newline = memchr::memchr(b'\n', &self.pending);
        if self.skipping {
            let skipped = newline.map_or(self.pending.len(), |at| at + 1);
            self.consume(skipped);
            self.skipping = newline.is_none();
            return Ok(());
        }
        if self.carry.is_empty() && self.pending_offset >= self.end {
            // The next line begins after the range: the next range's.
            self.done = true;
            return Ok(());
        }
        let Some(at) = newline else {
            if self.carry.is_empty() {
                self.carry_offset = self.pending_offset;
            }
            self.carry.extend_from_slice(&self.pending);
            let taken = self.pending.len();
            self.consume(taken);
            return Ok(());
        };
        let line_end = self.pending_offset + at as u64;
        if self.carry.is_empty() {
            lines.push(&self.pending[..at], line_end)?;
        } else {
            self.carry.extend_from_slice(&self.pending[..at]);
            lines.push(&self.carry, line_end)?;
            self.carry.clear();
        }
        self.consume(at + 1);
        Ok(())
    }

    fn consume(&mut self, count: usize) {
        let _ = self.pending.split_to(count);
        self.pending_offset += count as u64;
    }

    /// The file ended: a last line without a line end is still a line.
    fn finish_at_end_of_file(&mut self, lines: &mut Lines) -> Result<(), u64> {
        if !self.skipping && !self.carry.is_empty() && self.carry_offset < self.end {
            lines.push(&self.carry, self.size)?;
            self.carry.clear();
        }
        self.done = true;
        Ok(())
    }
}

/// A batch of lines being built, as the schema's string type.
pub(super) struct Lines {
    builder: Builder,
    count: usize,
    bytes: usize,
}

enum Builder {
    Utf8(StringBuilder),
    LargeUtf8(LargeStringBuilder),
}

impl Lines {
    pub(super) fn new(data_type: &DataType) -> Self {
        let builder = match data_type {
            DataType::LargeUtf8 => Builder::LargeUtf8(LargeStringBuilder::new()),
            _ => Builder::Utf8(StringBuilder::new()),
        };
        Self {
            builder,
            count: 0,
            bytes: 0,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn is_full(&self) -> bool {
        self.count >= BATCH_LINES_MAX || self.bytes >= BATCH_BYTES_MAX
    }

    /// Adds a line without its line end (a trailing `\r` is dropped too).
    fn push(&mut self, mut line: &[u8], line_end: u64) -> Result<(), u64> {
        while let [rest @ .., b'\r'] = line {
            line = rest;
        }
        let text = std::str::from_utf8(line).map_err(|_| line_end)?;
        match &mut self.builder {
            Builder::Utf8(builder) => builder.append_value(text),
            Builder::LargeUtf8(builder) => builder.append_value(text),
        }
        self.count += 1;
        self.bytes += text.len();
        Ok(())
    }

    /// The lines as one column; the builder starts over.
    pub(super) fn finish(&mut self) -> ArrayRef {
        self.count = 0;
        self.bytes = 0;
        match &mut self.builder {
            Builder::Utf8(builder) => Arc::new(builder.finish()),
            Builder::LargeUtf8(builder) => Arc::new(builder.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, StringArray};

    use super::*;

    /// The lines `[start, end)` of `text` owns, fed `chunk` bytes at a time.
    fn owned_lines(text: &[u8], start: u64, end: u64, chunk: u64) -> Vec<String> {
        let mut cursor = Cursor::new(start, end, text.len() as u64);
        let mut lines = Lines::new(&DataType::Utf8);
        let mut out = Vec::new();
        loop {
            match cursor.advance(&mut lines, chunk).expect("utf-8") {
                Step::Fetch { from, to } => {
                    let bytes = Bytes::copy_from_slice(&text[from as usize..to as usize]);
                    cursor.feed(bytes);
                }
                Step::BatchFull | Step::Done => {
                    let done = cursor.done;
                    let column = lines.finish();
                    let column = column
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .expect("strings");
                    out.extend((0..column.len()).map(|row| column.value(row).to_string()));
                    if done {
                        return out;
                    }
                }
            }
        }
    }

    #[test]
    fn every_line_is_read_once_however_the_file_is_cut() {
        let texts: [&[u8]; 5] = [
            b"a\nbb\n\nccc\r\ndddd\ne",
            b"\n\n\n",
            b"one line without end",
            b"x\n",
            b"long line that spans many chunks and ranges\nshort\n",
        ];
        for text in texts {
            let expected: Vec<String> = String::from_utf8_lossy(text)
                .lines()
                .map(str::to_string)
                .collect();
            let size = text.len() as u64;
            for cuts in 1..=size.max(1) {
                for chunk in [1, 2, 3, 7, 1024] {
                    let share = size.div_ceil(cuts).max(1);
                    let mut lines = Vec::new();
                    let mut start = 0;
                    while start < size {
                        let end = (start + share).min(size);
                        lines.extend(owned_lines(text, start, end, chunk));
                        start = end;
                    }
                    assert_eq!(lines, expected, "{text:?} in {cuts} ranges, chunk {chunk}");
                }
            }
        }
    }

    #[test]
    fn a_line_that_is_not_utf8_is_named_by_its_end() {
        let text = b"ok\n\xff\xfe bad\nok\n";
        let mut cursor = Cursor::new(0, text.len() as u64, text.len() as u64);
        let mut lines = Lines::new(&DataType::Utf8);
        let failure = loop {
            match cursor.advance(&mut lines, 1024) {
                Ok(Step::Fetch { from, to }) => {
                    cursor.feed(Bytes::copy_from_slice(&text[from as usize..to as usize]))
                }
                Ok(step) => panic!("no error but {step:?}"),
                Err(offset) => break offset,
            }
        };
        assert_eq!(failure, 9);
    }

    #[test]
    fn batches_are_cut_at_the_line_limit() {
        let text = "x\n".repeat(BATCH_LINES_MAX + 10);
        let lines = owned_lines(text.as_bytes(), 0, text.len() as u64, 1 << 20);
        assert_eq!(lines.len(), BATCH_LINES_MAX + 10);
    }
}

//! COPY's data formats: PostgreSQL's text, CSV and binary, read and written row by row.
//!
//! ```text
//!  text    1\tAlice\t\N\n          fields split on the delimiter; backslash escapes; \N is NULL
//!  csv     1,"Al,ice",\n          quotes protect delimiters and newlines; unquoted empty is NULL
//!  binary  PGCOPY\n\xff\r\n\0 flags ext | n:i16 (len:i32 bytes | -1)* ... | -1:i16
//! ```
//! The decoder is fed CopyData chunks as they arrive (a row may span chunks) and yields
//! complete rows as raw field bytes; the caller converts them with each column's type.

use protocol::error::{Error, Result, sqlstate};

/// One row: each field's bytes, `None` for NULL.
pub type RawRow = Vec<Option<Vec<u8>>>;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Format {
    Text,
    Csv,
    Binary,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub format: Format,
    pub delimiter: u8,
    pub null: String,
    pub header: bool,
    pub quote: u8,
    pub escape: u8,
}

impl Options {
    pub fn new(format: Format) -> Options {
        let csv = format == Format::Csv;
        Options {
            format,
            delimiter: if csv { b',' } else { b'\t' },
            null: if csv { String::new() } else { "\\N".into() },
            header: false,
            quote: b'"',
            escape: b'"',
        }
    }
}

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// A single row longer than this is refused rather than buffered without bound.
pub const MAX_ROW_BYTES: usize = 64 << 20;

fn bad_copy(message: impl Into<String>) -> Error {
    Error::new("22P04", message)
}

/// Turns a stream of CopyData chunks into rows.
pub struct Decoder {
    opts: Options,
    buf: Vec<u8>,
    pos: usize,
    /// Lines consumed so far (for the header and error messages).
    pub line: u64,
    header_done: bool,
    ended: bool,
}

impl Decoder {
    pub fn new(opts: Options) -> Decoder {
        Decoder {
            header_done: !opts.header && opts.format != Format::Binary,
            opts,
            buf: Vec::new(),
            pos: 0,
            line: 0,
            ended: false,
        }
    }

    pub fn feed(&mut self, data: &[u8]) -> Result<()> {
        if self.pos > 0 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.len() - self.pos + data.len() > MAX_ROW_BYTES + 8 {
            return Err(Error::new(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!("COPY row is longer than {MAX_ROW_BYTES} bytes"),
            ));
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The next complete row, if one is buffered. With `at_end`, a final row without its
    /// line end counts as complete.
    pub fn next_row(&mut self, at_end: bool) -> Result<Option<RawRow>> {
        loop {
            if self.ended {
                return Ok(None);
            }
            let row = match self.opts.format {
                Format::Binary => return self.next_binary(at_end),
                Format::Text => self.next_text(at_end)?,
                Format::Csv => self.next_csv(at_end)?,
            };
            let Some(row) = row else { return Ok(None) };
            self.line += 1;
            if !self.header_done {
                self.header_done = true;
                continue;
            }
            return Ok(Some(row));
        }
    }

    /// Errors unless every byte was consumed (a binary stream must end with its trailer).
    pub fn finish(&mut self) -> Result<()> {
        if self.opts.format == Format::Binary && !self.ended {
            return Err(bad_copy("unexpected EOF in COPY data"));
        }
        Ok(())
    }

    fn take_line(&mut self, at_end: bool) -> Option<Vec<u8>> {
        let rest = &self.buf[self.pos..];
        let (line, used) = match rest.iter().position(|&b| b == b'\n') {
            Some(n) => (&rest[..n], n + 1),
            None if at_end && !rest.is_empty() => (rest, rest.len()),
            None => return None,
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
        self.pos += used;
        Some(line)
    }

    fn next_text(&mut self, at_end: bool) -> Result<Option<RawRow>> {
        let Some(line) = self.take_line(at_end) else {
            return Ok(None);
        };
        if line == b"\\." {
            self.ended = true;
            return Ok(None);
        }
        let d = self.opts.delimiter;
        let mut fields = Vec::new();
        let mut field = Vec::new();
        // A field is NULL if its raw (unescaped) text is the null string.
        let mut raw_start = 0;
        let mut i = 0;
        let null = self.opts.null.as_bytes();
        let push = |field: &mut Vec<u8>, raw: &[u8], fields: &mut RawRow| {
            if raw == null {
                fields.push(None);
            } else {
                fields.push(Some(std::mem::take(field)));
            }
            field.clear();
        };
        while i < line.len() {
            let b = line[i];
            if b == d {
                push(&mut field, &line[raw_start..i], &mut fields);
                i += 1;
                raw_start = i;
                continue;
            }
            if b != b'\\' || i + 1 >= line.len() {
                field.push(b);
                i += 1;
                continue;
            }
            let c = line[i + 1];
            i += 2;
            match c {
                b'b' => field.push(8),
                b'f' => field.push(12),
                b'n' => field.push(b'\n'),
                b'r' => field.push(b'\r'),
                b't' => field.push(b'\t'),
                b'v' => field.push(11),
                b'0'..=b'7' => {
                    let mut v = u32::from(c - b'0');
                    let mut n = 1;
                    while n < 3 && i < line.len() && (b'0'..=b'7').contains(&line[i]) {
                        v = v * 8 + u32::from(line[i] - b'0');
                        i += 1;
                        n += 1;
                    }
                    field.push((v & 0xff) as u8);
                }
                b'x' if i < line.len() && line[i].is_ascii_hexdigit() => {
                    let mut v = 0u32;
                    let mut n = 0;
                    while n < 2 && i < line.len() && line[i].is_ascii_hexdigit() {
                        v = v * 16 + (line[i] as char).to_digit(16).unwrap_or(0);
                        i += 1;
                        n += 1;
                    }
                    field.push(v as u8);
                }
                other => field.push(other),
            }
        }
        push(&mut field, &line[raw_start..], &mut fields);
        Ok(Some(fields))
    }

    fn next_csv(&mut self, at_end: bool) -> Result<Option<RawRow>> {
        let o = &self.opts;
        let rest = &self.buf[self.pos..];
        if rest.starts_with(b"\\.\n") || rest.starts_with(b"\\.\r\n") || (at_end && rest == b"\\.")
        {
            self.ended = true;
            return Ok(None);
        }
        let mut fields: RawRow = Vec::new();
        let mut field = Vec::new();
        let (mut quoted, mut in_quotes) = (false, false);
        let mut i = 0;
        let null = o.null.as_bytes();
        let finish = |field: &mut Vec<u8>, quoted: bool, fields: &mut RawRow| {
            if !quoted && field.as_slice() == null {
                fields.push(None);
            } else {
                fields.push(Some(std::mem::take(field)));
            }
        };
        loop {
            let Some(&b) = rest.get(i) else {
                if !at_end || rest.is_empty() {
                    return Ok(None);
                }
                if in_quotes {
                    return Err(bad_copy("unterminated CSV quoted field"));
                }
                finish(&mut field, quoted, &mut fields);
                self.pos += i;
                return Ok(Some(fields));
            };
            if in_quotes {
                if b == o.escape && o.escape != o.quote && rest.get(i + 1) == Some(&o.quote) {
                    field.push(o.quote);
                    i += 2;
                } else if b == o.quote {
                    if o.escape == o.quote && rest.get(i + 1) == Some(&o.quote) {
                        field.push(o.quote);
                        i += 2;
                    } else if rest.get(i + 1).is_none() && !at_end {
                        // The next chunk decides whether this quote is doubled.
                        return Ok(None);
                    } else {
                        in_quotes = false;
                        i += 1;
                    }
                } else {
                    field.push(b);
                    i += 1;
                }
                continue;
            }
            match b {
                _ if b == o.quote => {
                    quoted = true;
                    in_quotes = true;
                    i += 1;
                }
                _ if b == o.delimiter => {
                    finish(&mut field, quoted, &mut fields);
                    quoted = false;
                    i += 1;
                }
                b'\n' => {
                    finish(&mut field, quoted, &mut fields);
                    self.pos += i + 1;
                    return Ok(Some(fields));
                }
                b'\r' if rest.get(i + 1) == Some(&b'\n') => {
                    finish(&mut field, quoted, &mut fields);
                    self.pos += i + 2;
                    return Ok(Some(fields));
                }
                b'\r' if rest.get(i + 1).is_none() && !at_end => return Ok(None),
                _ => {
                    field.push(b);
                    i += 1;
                }
            }
        }
    }

    fn next_binary(&mut self, at_end: bool) -> Result<Option<RawRow>> {
        let rest = &self.buf[self.pos..];
        let short = |at_end: bool| {
            if at_end {
                Err(bad_copy("unexpected EOF in COPY data"))
            } else {
                Ok(None)
            }
        };
        if !self.header_done {
            if rest.len() < SIGNATURE.len() + 8 {
                return short(at_end);
            }
            if &rest[..SIGNATURE.len()] != SIGNATURE {
                return Err(bad_copy("COPY file signature not recognized"));
            }
            let ext = i32::from_be_bytes(rest[15..19].try_into().unwrap_or_default());
            let ext = usize::try_from(ext).map_err(|_| bad_copy("invalid COPY file header"))?;
            if rest.len() < 19 + ext {
                return short(at_end);
            }
            self.pos += 19 + ext;
            self.header_done = true;
            return self.next_binary(at_end);
        }
        if rest.len() < 2 {
            return short(at_end);
        }
        let count = i16::from_be_bytes([rest[0], rest[1]]);
        if count == -1 {
            self.ended = true;
            self.pos += 2;
            return Ok(None);
        }
        let count = usize::try_from(count).map_err(|_| bad_copy("invalid COPY field count"))?;
        let mut at = 2;
        let mut row = Vec::with_capacity(count);
        for _ in 0..count {
            let Some(len) = rest.get(at..at + 4) else {
                return short(at_end);
            };
            let len = i32::from_be_bytes(len.try_into().unwrap_or_default());
            at += 4;
            if len == -1 {
                row.push(None);
                continue;
            }
            let len = usize::try_from(len).map_err(|_| bad_copy("invalid COPY field length"))?;
            let Some(bytes) = rest.get(at..at + len) else {
                return short(at_end);
            };
            row.push(Some(bytes.to_vec()));
            at += len;
        }
        self.pos += at;
        self.line += 1;
        Ok(Some(row))
    }
}

/// Writes rows in one of the formats.
pub struct Encoder {
    opts: Options,
}

impl Encoder {
    pub fn new(opts: Options) -> Encoder {
        Encoder { opts }
    }

    /// What precedes the rows: the binary signature, or a CSV header line.
    pub fn header(&self, names: &[String]) -> Option<Vec<u8>> {
        match self.opts.format {
            Format::Binary => {
                let mut out = SIGNATURE.to_vec();
                out.extend_from_slice(&0i32.to_be_bytes());
                out.extend_from_slice(&0i32.to_be_bytes());
                Some(out)
            }
            Format::Csv if self.opts.header => {
                let row: Vec<Option<Vec<u8>>> =
                    names.iter().map(|n| Some(n.as_bytes().to_vec())).collect();
                Some(self.row(&row))
            }
            Format::Text if self.opts.header => {
                let row: Vec<Option<Vec<u8>>> =
                    names.iter().map(|n| Some(n.as_bytes().to_vec())).collect();
                Some(self.row(&row))
            }
            _ => None,
        }
    }

    /// One row; text and CSV fields are text, binary fields their binary form.
    pub fn row(&self, fields: &[Option<Vec<u8>>]) -> Vec<u8> {
        let mut out = Vec::new();
        match self.opts.format {
            Format::Binary => {
                out.extend_from_slice(&(fields.len() as i16).to_be_bytes());
                for f in fields {
                    match f {
                        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                        Some(b) => {
                            out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                            out.extend_from_slice(b);
                        }
                    }
                }
            }
            Format::Text => {
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(self.opts.delimiter);
                    }
                    match f {
                        None => out.extend_from_slice(self.opts.null.as_bytes()),
                        Some(b) => {
                            for &c in b {
                                match c {
                                    b'\\' => out.extend_from_slice(b"\\\\"),
                                    b'\n' => out.extend_from_slice(b"\\n"),
                                    b'\r' => out.extend_from_slice(b"\\r"),
                                    b'\t' => out.extend_from_slice(b"\\t"),
                                    8 => out.extend_from_slice(b"\\b"),
                                    12 => out.extend_from_slice(b"\\f"),
                                    11 => out.extend_from_slice(b"\\v"),
                                    c if c == self.opts.delimiter => {
                                        out.push(b'\\');
                                        out.push(c);
                                    }
                                    c => out.push(c),
                                }
                            }
                        }
                    }
                }
                out.push(b'\n');
            }
            Format::Csv => {
                let o = &self.opts;
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(o.delimiter);
                    }
                    match f {
                        None => out.extend_from_slice(o.null.as_bytes()),
                        Some(b) => {
                            let needs = b.is_empty() && o.null.is_empty()
                                || b.as_slice() == o.null.as_bytes()
                                || b == b"\\."
                                || b.iter().any(|&c| {
                                    c == o.delimiter || c == o.quote || c == b'\n' || c == b'\r'
                                });
                            if !needs {
                                out.extend_from_slice(b);
                                continue;
                            }
                            out.push(o.quote);
                            for &c in b {
                                if c == o.quote || c == o.escape {
                                    out.push(o.escape);
                                }
                                out.push(c);
                            }
                            out.push(o.quote);
                        }
                    }
                }
                out.push(b'\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(format: Format, chunks: &[&[u8]]) -> Vec<RawRow> {
        let mut d = Decoder::new(Options::new(format));
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c).expect("feed");
            while let Some(r) = d.next_row(false).expect("row") {
                out.push(r);
            }
        }
        while let Some(r) = d.next_row(true).expect("row") {
            out.push(r);
        }
        d.finish().expect("finish");
        out
    }

    fn s(v: &str) -> Option<Vec<u8>> {
        Some(v.as_bytes().to_vec())
    }

    #[test]
    fn text_rows_split_across_chunks() {
        let got = rows(
            Format::Text,
            &[b"1\tA\\tb\t\\N\n2\t", b"x\\\\y\t\\101\n\\.\n"],
        );
        assert_eq!(
            got,
            vec![
                vec![s("1"), s("A\tb"), None],
                vec![s("2"), s("x\\y"), s("A")]
            ]
        );
    }

    #[test]
    fn csv_quotes_newlines_and_nulls() {
        let got = rows(
            Format::Csv,
            &[b"1,\"a,\"\"b\"\"\n", b"c\",\n2,\"\",x\r\n3,,\"\""],
        );
        assert_eq!(
            got,
            vec![
                vec![s("1"), s("a,\"b\"\nc"), None],
                vec![s("2"), s(""), s("x")],
                vec![s("3"), None, s("")],
            ]
        );
    }

    #[test]
    fn round_trips_every_format() {
        let row = vec![s("a\tb,\"c\"\n"), None, s(""), s("\\N")];
        for f in [Format::Text, Format::Csv, Format::Binary] {
            let enc = Encoder::new(Options::new(f));
            let mut bytes = enc.header(&[]).unwrap_or_default();
            bytes.extend(enc.row(&row));
            if f == Format::Binary {
                bytes.extend_from_slice(&(-1i16).to_be_bytes());
            }
            // Feed one byte at a time: every split point must work.
            let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(rows(f, &chunks), vec![row.clone()], "{f:?}");
        }
    }

    #[test]
    fn bad_binary_signature_is_refused() {
        let mut d = Decoder::new(Options::new(Format::Binary));
        d.feed(b"NOTCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0")
            .expect("feed");
        assert!(d.next_row(false).is_err());
    }
}

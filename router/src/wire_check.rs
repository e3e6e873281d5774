//! Shape checks of the frontend messages whose decoders in pgwire trust their lengths.
//!
//! pgwire reads the fields of Parse, Bind, Execute, Describe, Close and SASLInitialResponse
//! with unchecked `get_u16`/`get_i32`/`split_to`, so a message whose counts or lengths run
//! past its end would panic its connection task (found by `fuzz/fuzz_targets/
//! frontend_messages.rs`). The guard runs these checks on each such message before pgwire
//! sees it and refuses a malformed one with 08P01 "invalid message format", as PostgreSQL
//! does.
//!
//! ```text
//!  'P' Parse     name\0 query\0 n:u16 n×oid:u32
//!  'B' Bind      portal\0 stmt\0 nf:u16 nf×fmt:i16 np:u16 np×(len:i32 (-1 | len bytes)) nr:u16 nr×fmt:i16
//!  'E' Execute   portal\0 max_rows:i32
//!  'D' Describe / 'C' Close   kind:u8 ('S' | 'P') name\0
//! ```

/// A cursor over a message body that refuses to read past its end.
struct Body<'a> {
    rest: &'a [u8],
}

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn cstring(&mut self) -> Option<()> {
        let end = self.rest.iter().position(|&b| b == 0)?;
        self.take(end + 1).map(|_| ())
    }
    fn done(&self) -> Option<()> {
        self.rest.is_empty().then_some(())
    }
}

/// Whether the guard must see the whole body of a message of this type before passing it.
/// CopyData ('d') and password messages ('p') are taken by pgwire as exactly their bodies, so
/// they stream; every other type it knows is checked, because a decoder that reads less or
/// more than its message (pgwire hands each decoder the whole buffer) would make pgwire see
/// message boundaries other than the guard's.
pub fn checked(kind: u8) -> bool {
    matches!(
        kind,
        b'P' | b'B' | b'E' | b'D' | b'C' | b'Q' | b'f' | b'c' | b'S' | b'H' | b'X'
    )
}

/// Checks the body of a message of type `kind`; `Err` is the message to refuse it with.
pub fn check(kind: u8, body: &[u8]) -> Result<(), String> {
    let mut b = Body { rest: body };
    let ok = match kind {
        b'P' => (|| {
            b.cstring()?;
            b.cstring()?;
            let n = b.u16()?;
            b.take(4 * n)?;
            b.done()
        })(),
        b'B' => (|| {
            b.cstring()?;
            b.cstring()?;
            let formats = b.u16()?;
            b.take(2 * formats)?;
            for _ in 0..b.u16()? {
                let len = b.i32()?;
                if len >= 0 {
                    b.take(len as usize)?;
                } else if len != -1 {
                    return None;
                }
            }
            let results = b.u16()?;
            b.take(2 * results)?;
            b.done()
        })(),
        b'E' => (|| {
            b.cstring()?;
            b.i32()?;
            b.done()
        })(),
        b'D' | b'C' => (|| {
            matches!(b.u8()?, b'S' | b'P').then_some(())?;
            b.cstring()?;
            b.done()
        })(),
        // Query and CopyFail: one string, exactly.
        b'Q' | b'f' => (|| {
            b.cstring()?;
            b.done()
        })(),
        // CopyDone, Sync, Flush, Terminate: no body.
        b'c' | b'S' | b'H' | b'X' => b.done(),
        _ => Some(()),
    };
    ok.ok_or_else(|| "invalid message format".to_string())
}

/// Checks a StartupMessage's parameters (after its length and protocol version): pairs of a
/// non-empty name and a value, each NUL-terminated, then one NUL as the last byte.
pub fn check_startup_parameters(params: &[u8]) -> Result<(), String> {
    let mut b = Body { rest: params };
    loop {
        match b.rest {
            [0] => return Ok(()),
            [] | [0, ..] => {
                return Err(
                    "invalid startup packet layout: expected terminator as last byte".into(),
                );
            }
            _ => {}
        }
        b.cstring()
            .and_then(|_| b.cstring())
            .ok_or("invalid startup packet layout: unterminated parameter")?;
    }
}

/// Checks a SASLInitialResponse body (`mechanism\0 len:i32 (-1 | len bytes)`).
pub fn check_sasl_initial(body: &[u8]) -> Result<(), String> {
    let mut b = Body { rest: body };
    (|| {
        b.cstring()?;
        let len = b.i32()?;
        if len >= 0 {
            b.take(len as usize)?;
        } else if len != -1 {
            return None;
        }
        b.done()
    })()
    .ok_or_else(|| "invalid message format".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_messages_pass_and_truncated_ones_do_not() {
        let parse = b"s1\0SELECT $1\0\x00\x01\x00\x00\x00\x17";
        assert!(check(b'P', parse).is_ok());
        assert!(check(b'P', &parse[..parse.len() - 1]).is_err());
        // The count says 255 type oids, the body has none (the fuzzer's crash).
        assert!(check(b'P', b"\0\0\x00\xff").is_err());
        let bind = b"\0s1\0\x00\x01\x00\x01\x00\x02\x00\x00\x00\x02hi\xff\xff\xff\xff\x00\x00";
        assert!(check(b'B', bind).is_ok());
        assert!(check(b'B', &bind[..12]).is_err());
        assert!(check(b'B', b"\0\0\x00\x00\x00\x01\x7f\xff\xff\xff\x00\x00").is_err());
        assert!(check(b'E', b"\0\x00\x00\x00\x00").is_ok());
        assert!(check(b'E', b"\0\x00").is_err());
        assert!(check(b'D', b"Sname\0").is_ok());
        assert!(check(b'C', b"X\0").is_err());
        assert!(check(b'Q', b"SELECT 1\0").is_ok());
        // A query without its NUL would make pgwire read on into the next message.
        assert!(check(b'Q', b"anything").is_err());
        assert!(check(b'S', b"").is_ok());
        assert!(check(b'S', b"x").is_err());
        assert!(check_startup_parameters(b"user\0bob\0database\0\0\0").is_ok());
        assert!(check_startup_parameters(b"\0").is_ok());
        assert!(check_startup_parameters(b"user\0bob\0").is_err());
        assert!(check_startup_parameters(b"user\0bob").is_err());
        assert!(check_startup_parameters(b"\x04").is_err());
        assert!(check_startup_parameters(b"user\0bob\0\0junk").is_err());
        assert!(check_sasl_initial(b"SCRAM-SHA-256\0\x00\x00\x00\x02ab").is_ok());
        assert!(check_sasl_initial(b"SCRAM-SHA-256\0").is_err());
        assert!(check_sasl_initial(b"SCRAM-SHA-256\0\x7f\xff\xff\xff").is_err());
    }
}

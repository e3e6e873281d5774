//! Arbitrary client bytes through the connection guard (startup packets, message framing and
//! the size limit), then whatever it lets through into pgwire's frontend message decoder, in
//! the states a real connection passes: startup first, then regular messages. Nothing may
//! panic, and nothing over the limit may get through.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage};

const MAX_MESSAGE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Ok(passed) = futures::executor::block_on(router::guard::screen(data, MAX_MESSAGE)) else {
        return;
    };
    let mut buf = BytesMut::from(&passed[..]);
    let mut ctx = DecodeContext::default();
    ctx.awaiting_frontend_ssl = false;
    while let Ok(Some(message)) = PgWireFrontendMessage::decode(&mut buf, &ctx) {
        if let PgWireFrontendMessage::Startup(_) = message {
            ctx.awaiting_frontend_startup = false;
        }
        if ctx.awaiting_frontend_startup {
            // A CancelRequest ends the connection.
            break;
        }
    }
});

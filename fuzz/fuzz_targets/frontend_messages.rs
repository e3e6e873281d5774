//! Arbitrary client bytes through the connection guard (startup packets, message framing and
//! the size limit), then whatever it lets through into pgwire's frontend message decoder, in
//! the states a real connection passes: startup first, then regular messages. Nothing may
//! panic, and nothing over the limit may get through.
#![no_main]

use libfuzzer_sys::fuzz_target;

const MAX_MESSAGE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    if let Ok(passed) = futures::executor::block_on(router::guard::screen(data, MAX_MESSAGE)) {
        router::guard::decode_passed(&passed);
    }
});

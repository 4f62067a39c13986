//! Every gRPC request kind a client or worker can send, through the
//! coordinator's real handlers (see `tone_coordinator::fuzzing`).
#![no_main]

mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (runtime, harness) = harness::harness();
    runtime.block_on(harness.request(data));
});

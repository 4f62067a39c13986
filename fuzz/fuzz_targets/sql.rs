//! SQL text as a client submits it: parsed, planned and cut into stages.
#![no_main]

mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (runtime, harness) = harness::harness();
    runtime.block_on(harness.sql(text));
});

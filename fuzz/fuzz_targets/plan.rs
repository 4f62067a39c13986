//! Encoded physical plans as a client sends them (tone's codec inside
//! datafusion-proto bytes): decoded, checked and cut into stages.
#![no_main]

mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (_, harness) = harness::harness();
    harness.plan(data);
});

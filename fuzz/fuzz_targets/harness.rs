//! One in-process coordinator per fuzzing process, on one runtime.

use std::sync::OnceLock;

use tone_coordinator::fuzzing::Harness;

pub fn harness() -> &'static (tokio::runtime::Runtime, Harness) {
    static HARNESS: OnceLock<(tokio::runtime::Runtime, Harness)> = OnceLock::new();
    HARNESS.get_or_init(|| {
        tolerate_caught_upstream_panics();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let harness = runtime.block_on(Harness::start());
        (runtime, harness)
    })
}

/// libfuzzer-sys aborts on every panic, also one tone catches on purpose:
/// arrow-ipc 59 panics on malformed IPC bytes inside a memory source, and
/// `tone_engine::codec::decode_plan` turns any panic while decoding into a
/// plan error. Those are let through so the search goes on past them; any
/// other panic still aborts.
fn tolerate_caught_upstream_panics() {
    let fuzzer_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !tone_engine::codec::is_decoding() {
            fuzzer_hook(info);
        }
    }));
}

//! One in-process coordinator per fuzzing process, on one runtime.

use std::sync::OnceLock;

use tone_coordinator::fuzzing::Harness;

pub fn harness() -> &'static (tokio::runtime::Runtime, Harness) {
    static HARNESS: OnceLock<(tokio::runtime::Runtime, Harness)> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let harness = runtime.block_on(Harness::start());
        (runtime, harness)
    })
}

//! The one rayon pool that runs tone's CPU-heavy work (hash partitioning,
//! IPC encoding, combining), and the bridge that hands results back to async
//! code without blocking a tokio worker thread.

use std::sync::OnceLock;

use crate::error::{EngineError, Result};

static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();

/// The process-wide CPU pool, sized to the machine's cores.
pub fn pool() -> &'static rayon::ThreadPool {
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|index| format!("tone-cpu-{index}"))
            .build()
            // Building a pool fails only when the OS refuses to start threads,
            // and nothing in tone can run without them.
            .expect("cannot start the tone CPU thread pool")
    })
}

/// Runs `work` on the CPU pool and awaits its result.
///
/// A panic inside `work` comes back as an execution error instead of tearing
/// down the caller.
pub async fn run_cpu<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (sender, receiver) = tokio::sync::oneshot::channel();
    pool().spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        // The receiver is gone only when the caller was cancelled; then the
        // result has nobody to go to.
        let _ = sender.send(outcome);
    });
    match receiver.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(panic)) => Err(EngineError::execution(format!(
            "a CPU task panicked: {}",
            panic_message(&panic)
        ))),
        Err(_) => Err(EngineError::internal("the CPU pool dropped a task")),
    }
}

/// The text a panic was raised with, when it has one.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_string()
    }
}

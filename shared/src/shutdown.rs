//! Process shutdown: the signal both binaries stop on.

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called (not
/// when the future is first polled), so a signal that arrives during start-up is not lost to
/// the default action (immediate termination). Call it inside the runtime, early.
pub fn signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{self, SignalKind};
    let terminate = unix::signal(SignalKind::terminate()).ok();
    let interrupt = unix::signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |s: Option<unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(terminate) => {},
            _ = wait(interrupt) => {},
        }
    }
}

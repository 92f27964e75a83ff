//! The process signals a sidecar and the CLI's servers answer: SIGTERM/SIGINT to drain and
//! stop, SIGHUP to reload.

/// Completes on the first SIGTERM or SIGINT (Ctrl-C); only Ctrl-C where there is no SIGTERM.
pub async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                // Without a SIGTERM handler, Ctrl-C still stops us.
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}

/// SIGHUP as a stream, installed before a sidecar says it started: SIGHUP's default action
/// would kill the process, and operators send it to every sidecar after rotating files.
pub(crate) struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Installs the handler (from here on SIGHUP no longer kills the process).
    pub(crate) fn install() -> Self {
        Self {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    /// The next SIGHUP; never, where there is none.
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = self.signal.as_mut() {
            if signal.recv().await.is_some() {
                return;
            }
        }
        std::future::pending().await
    }
}

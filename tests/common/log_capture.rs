//! Every log line of a test binary (the gateway runs in-process), for tests that assert on
//! what frontgate logged.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Capture(Arc::clone(&sink)))
            .init();
        log
    })
}

/// Starts capturing (once per binary; later calls do nothing).
pub fn start() {
    log();
}

/// Everything logged so far.
pub fn text() -> String {
    String::from_utf8_lossy(&log().lock().unwrap()).into_owned()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

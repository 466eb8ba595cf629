//! The process's log: to standard error, filtered and formatted as the
//! configuration says (`TOLLGATE_LOG`, `TOLLGATE_LOG_FORMAT`).
//!
//! Lines are not written by the thread that logs them: they are queued,
//! and a thread of their own writes what has gathered with one `write`. A
//! request thus never waits on standard error, and a reader of it that
//! stalls (a full pipe) cannot stall the server: past [`BACKLOG`] bytes
//! waiting, lines are dropped, and how many is said once the reader is back.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use anyhow::Context;

use crate::config::{Config, LogFormat};

/// Bytes of lines waiting to be written at most.
const BACKLOG: usize = 4 << 20;

/// The buffer kept between writes at most; a burst's larger one is freed.
const KEPT: usize = 64 << 10;

/// How long the writer lets lines gather once one arrives: under load, one
/// `write` carries many lines; a lone line waits this long at most.
const GATHER: Duration = Duration::from_millis(2);

/// How long [`flush`] waits for the queued lines to be written.
const FLUSH_LIMIT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Queue {
    lines: Vec<u8>,
    /// Lines dropped since the writer last wrote.
    dropped: u64,
    /// The writer holds lines it took and has not finished writing.
    writing: bool,
}

/// Lines on their way from the threads that log to the writer thread.
#[derive(Default)]
struct Pipe {
    queue: Mutex<Queue>,
    /// Told when lines arrive in an empty queue.
    arrived: Condvar,
    /// Told when the writer has written all it took.
    written: Condvar,
}

impl Pipe {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes what arrives to `out`, for as long as the process runs.
    fn run(&self, mut out: impl Write) {
        let mut batch = Vec::new();
        loop {
            let mut queue = self.lock();
            while queue.lines.is_empty() && queue.dropped == 0 {
                queue = self.arrived.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
            drop(queue);
            std::thread::sleep(GATHER);
            let mut queue = self.lock();
            std::mem::swap(&mut batch, &mut queue.lines);
            let dropped = std::mem::take(&mut queue.dropped);
            queue.writing = true;
            drop(queue);
            if dropped > 0 {
                let note =
                    format!("tollgate: {dropped} log lines were dropped: standard error was not read fast enough\n");
                batch.extend_from_slice(note.as_bytes());
            }
            // Nowhere to say that standard error failed: the lines are lost.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            // A burst's buffer is not kept for good.
            batch.shrink_to(KEPT);
            self.lock().writing = false;
            self.written.notify_all();
        }
    }

    /// Queues one formatted line (or drops it when the backlog is full).
    fn push(&self, line: &[u8]) {
        let mut queue = self.lock();
        let was_empty = queue.lines.is_empty();
        if queue.lines.len() + line.len() > BACKLOG {
            queue.dropped += 1;
        } else {
            queue.lines.extend_from_slice(line);
        }
        drop(queue);
        if was_empty {
            self.arrived.notify_one();
        }
    }

    /// Waits until every line queued before the call is written, or
    /// `limit` has passed.
    fn flush(&self, limit: Duration) {
        let queue = self.lock();
        let _ = self
            .written
            .wait_timeout_while(queue, limit, |q| !q.lines.is_empty() || q.dropped > 0 || q.writing)
            .unwrap_or_else(|p| p.into_inner());
    }
}

/// The log's writer as `tracing_subscriber` asks for it: each line it
/// formats arrives in one `write`.
#[derive(Clone)]
struct Lines(Arc<Pipe>);

impl Write for Lines {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.0.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

/// Starts the writer thread of a pipe to `out`.
fn start(out: impl Write + Send + 'static) -> anyhow::Result<Arc<Pipe>> {
    let pipe = Arc::new(Pipe::default());
    let writer = pipe.clone();
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || writer.run(out))
        .context("failed to start the log's writer thread")?;
    Ok(pipe)
}

/// The pipe of the installed log.
static INSTALLED: OnceLock<Arc<Pipe>> = OnceLock::new();

/// Installs the log as `config` says; once per process.
pub fn init(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("TOLLGATE_LOG: {:?} is not a log filter", config.log_level))?;
    let pipe = start(io::stderr())?;
    // Plain text, at a terminal too: with tracing-subscriber's `ansi`
    // feature on, every part of a line goes through its styling even with
    // colours off (some 3,000 instructions of an access line's 11,000).
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(Lines(pipe.clone()));
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    let _ = INSTALLED.set(pipe);
    Ok(())
}

/// Writes out the lines still queued (waiting two seconds at most): call
/// before the process exits.
pub fn flush() {
    if let Some(pipe) = INSTALLED.get() {
        pipe.flush(FLUSH_LIMIT);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A standard error that hands each `write` to the test, and can be
    /// held shut (a reader that stalls).
    struct Reader {
        writes: mpsc::Sender<Vec<u8>>,
        open: Arc<Mutex<()>>,
    }

    impl Write for Reader {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let _open = self.open.lock().unwrap();
            self.writes.send(bytes.to_vec()).unwrap();
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn reader() -> (Arc<Pipe>, mpsc::Receiver<Vec<u8>>, Arc<Mutex<()>>) {
        let (writes, written) = mpsc::channel();
        let open = Arc::new(Mutex::new(()));
        (start(Reader { writes, open: open.clone() }).unwrap(), written, open)
    }

    #[test]
    fn lines_come_out_whole_in_order_and_many_to_a_write() {
        let (pipe, written, _) = reader();
        let mut lines = Lines(pipe.clone());
        for i in 0..1000 {
            lines.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        pipe.flush(Duration::from_secs(10));
        let writes: Vec<Vec<u8>> = written.try_iter().collect();
        let out = String::from_utf8(writes.concat()).unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(out, expected);
        assert!(writes.len() < 1000, "lines gathered into fewer writes: {}", writes.len());
    }

    #[test]
    fn a_reader_that_stalls_stalls_no_one_and_is_told_what_it_missed() {
        let (pipe, written, open) = reader();
        let stalled = open.lock().unwrap();
        let mut lines = Lines(pipe.clone());
        let line = [b'x'; 1023].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        // The writer takes the first line and then waits on the reader (the
        // test waits for that, so that the backlog cannot fill and drop
        // lines before the writer has taken any); the backlog fills behind
        // it, then lines are dropped.
        let n = 3 * BACKLOG / line.len();
        lines.write_all(&line).unwrap();
        let waited = std::time::Instant::now();
        while !pipe.lock().writing {
            assert!(waited.elapsed() < Duration::from_secs(30), "the writer never took the first line");
            std::thread::sleep(Duration::from_millis(1));
        }
        let (done, logged) = mpsc::channel();
        std::thread::spawn(move || {
            for _ in 1..n {
                lines.write_all(&line).unwrap();
            }
            done.send(()).unwrap();
        });
        logged.recv_timeout(Duration::from_secs(30)).expect("logging waited for the stalled reader");
        drop(stalled);
        pipe.flush(Duration::from_secs(10));
        let out = String::from_utf8(written.try_iter().collect::<Vec<_>>().concat()).unwrap();
        let kept = out.lines().filter(|l| l.starts_with('x')).count();
        assert_eq!(kept, 1 + BACKLOG / 1024, "the first line and a full backlog, of {n}");
        // Said with the write that follows the drops, after its lines.
        let said: Vec<usize> = out
            .lines()
            .filter_map(|l| {
                l.strip_prefix("tollgate: ")?
                    .strip_suffix(" log lines were dropped: standard error was not read fast enough")
            })
            .map(|count| count.parse().unwrap())
            .collect();
        assert_eq!(said, [n - kept], "every dropped line is counted, once");
        assert!(out.ends_with("not read fast enough\n"), "{}", &out[out.len() - 200..]);
    }
}

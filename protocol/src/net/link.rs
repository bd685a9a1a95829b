//! The outgoing half of an endpoint: an emulated link (bandwidth, latency, pacing)
//! served by a background writer thread, or a direct hand-off when nothing is emulated.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Message, NetError, NetProfile, HEADER_LEN};

/// Most bytes (frames, headers included) queued on an endpoint's emulated link before
/// `send` waits. A single larger message is still accepted when the queue is empty.
pub const MAX_IN_FLIGHT: usize = 1 << 30;

/// After a dropped endpoint's last message was due, how long its writer may still take to
/// hand the queue over before the link is torn down.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Below this much remaining time the writer spins (yielding) instead of sleeping, since
/// sleeps overshoot by tens of microseconds.
const SPIN: Duration = Duration::from_micros(100);

/// Where the writer puts messages once they are due.
pub(crate) trait Sink: Send + 'static {
    fn deliver(&mut self, msg: Message) -> Result<(), NetError>;
    fn flush(&mut self) -> Result<(), NetError>;
    /// Graceful end of this direction (after the last message).
    fn close(&mut self);
}

/// Unblocks a writer stuck in `Sink::deliver` (e.g. shuts the socket down).
pub(crate) type Aborter = Box<dyn Fn() + Send>;

struct State {
    queue: VecDeque<(Option<Instant>, Message)>,
    /// Frame bytes queued or being written.
    bytes: usize,
    /// The writer holds a message (waiting for its time, or writing it).
    busy: bool,
    closing: bool,
    abort: bool,
    error: Option<NetError>,
    link_free: Instant,
    last_due: Instant,
}

struct Shared {
    st: Mutex<State>,
    /// Signalled when work arrives or the endpoint closes/aborts (writer waits here).
    work: Condvar,
    /// Signalled when the writer makes progress or fails (senders and `flush` wait here).
    progress: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Writer {
    handle: Option<JoinHandle<()>>,
    done: mpsc::Receiver<()>,
    aborter: Option<Aborter>,
}

/// The sending side of an endpoint.
pub(crate) struct Outbox {
    shared: Arc<Shared>,
    max_frame: usize,
    bandwidth_bps: Option<f64>,
    one_way: Duration,
    /// Direct mode (no emulation, no thread).
    direct: Option<Box<dyn Sink>>,
    writer: Option<Writer>,
}

impl Outbox {
    /// With `force_thread` false and a profile that emulates nothing, messages go straight
    /// to the sink from `send`; otherwise a writer thread delivers them when due.
    pub fn new(
        sink: Box<dyn Sink>,
        profile: &NetProfile,
        max_frame: usize,
        force_thread: bool,
        aborter: Option<Aborter>,
        thread_name: String,
    ) -> Result<Self, NetError> {
        let now = Instant::now();
        let shared = Arc::new(Shared {
            st: Mutex::new(State {
                queue: VecDeque::new(),
                bytes: 0,
                busy: false,
                closing: false,
                abort: false,
                error: None,
                link_free: now,
                last_due: now,
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
        });
        let mut out = Self {
            shared,
            max_frame,
            bandwidth_bps: profile.bandwidth_bps,
            one_way: profile.rtt / 2,
            direct: None,
            writer: None,
        };
        if profile.is_none() && !force_thread {
            out.direct = Some(sink);
        } else {
            let (done_tx, done) = mpsc::channel();
            let shared = out.shared.clone();
            let handle = thread::Builder::new().name(thread_name).spawn(move || {
                writer_loop(&shared, sink);
                drop(done_tx);
            })?;
            out.writer = Some(Writer {
                handle: Some(handle),
                done,
                aborter,
            });
        }
        Ok(out)
    }

    /// The error the writer hit, if any.
    pub fn error(&self) -> Option<NetError> {
        self.shared.lock().error.clone()
    }

    pub fn send(&mut self, msg: Message) -> Result<(), NetError> {
        let len = msg.payload.len();
        if len > self.max_frame || len > u32::MAX as usize {
            return Err(NetError::FrameTooLong {
                len,
                max: self.max_frame.min(u32::MAX as usize),
            });
        }
        if let Some(sink) = self.direct.as_mut() {
            let mut st = self.shared.lock();
            if let Some(e) = &st.error {
                return Err(e.clone());
            }
            let res = sink.deliver(msg);
            if let Err(e) = &res {
                st.error = Some(e.clone());
            }
            return res;
        }
        let size = HEADER_LEN + len;
        let mut st = self.shared.lock();
        loop {
            if let Some(e) = &st.error {
                return Err(e.clone());
            }
            if st.bytes == 0 || st.bytes + size <= MAX_IN_FLIGHT {
                break;
            }
            st = wait(&self.shared.progress, st);
        }
        let due = if self.bandwidth_bps.is_none() && self.one_way.is_zero() {
            None
        } else {
            let start = st.link_free.max(Instant::now());
            let serialize = match self.bandwidth_bps {
                Some(bw) => Duration::from_secs_f64(8.0 * size as f64 / bw),
                None => Duration::ZERO,
            };
            st.link_free = start + serialize;
            let due = st.link_free + self.one_way;
            st.last_due = due;
            Some(due)
        };
        st.queue.push_back((due, msg));
        st.bytes += size;
        drop(st);
        self.shared.work.notify_all();
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), NetError> {
        if let Some(sink) = self.direct.as_mut() {
            let mut st = self.shared.lock();
            if let Some(e) = &st.error {
                return Err(e.clone());
            }
            let res = sink.flush();
            if let Err(e) = &res {
                st.error = Some(e.clone());
            }
            return res;
        }
        let mut st = self.shared.lock();
        loop {
            if let Some(e) = &st.error {
                return Err(e.clone());
            }
            if st.queue.is_empty() && !st.busy {
                return Ok(());
            }
            st = wait(&self.shared.progress, st);
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if let Some(mut sink) = self.direct.take() {
            sink.close();
            return;
        }
        let Some(mut w) = self.writer.take() else {
            return;
        };
        let deadline = {
            let mut st = self.shared.lock();
            st.closing = true;
            st.last_due.max(Instant::now()) + DRAIN_GRACE
        };
        self.shared.work.notify_all();
        let wait_for = deadline.saturating_duration_since(Instant::now());
        if let Err(mpsc::RecvTimeoutError::Timeout) = w.done.recv_timeout(wait_for) {
            self.shared.lock().abort = true;
            self.shared.work.notify_all();
            if let Some(abort) = &w.aborter {
                abort();
            }
        }
        if let Some(h) = w.handle.take() {
            let _ = h.join();
        }
    }
}

fn wait<'a>(cv: &Condvar, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
    cv.wait(g).unwrap_or_else(|e| e.into_inner())
}

/// Waits until `due`; returns false if the endpoint was aborted meanwhile.
fn wait_until(shared: &Shared, due: Instant) -> bool {
    loop {
        let now = Instant::now();
        if now >= due {
            return true;
        }
        let left = due - now;
        if left > SPIN {
            let st = shared.lock();
            if st.abort {
                return false;
            }
            drop(
                shared
                    .work
                    .wait_timeout(st, left - SPIN)
                    .unwrap_or_else(|e| e.into_inner()),
            );
        } else {
            while Instant::now() < due {
                thread::yield_now();
            }
            return true;
        }
    }
}

fn writer_loop(shared: &Shared, mut sink: Box<dyn Sink>) {
    let mut dirty = false;
    loop {
        let (due, msg) = {
            let mut st = shared.lock();
            loop {
                if st.abort || st.error.is_some() {
                    return;
                }
                if let Some(item) = st.queue.pop_front() {
                    st.busy = true;
                    break item;
                }
                if st.closing {
                    drop(st);
                    sink.close();
                    return;
                }
                st = wait(&shared.work, st);
            }
        };
        let size = HEADER_LEN + msg.payload.len();
        let mut res = Ok(());
        if let Some(due) = due {
            if dirty && Instant::now() < due {
                res = sink.flush();
                dirty = false;
            }
            if res.is_ok() && !wait_until(shared, due) {
                return;
            }
        }
        if res.is_ok() {
            res = sink.deliver(msg);
            dirty = true;
        }
        if res.is_ok() {
            // Flush unless another message is already due (batch small frames).
            let now = Instant::now();
            let more_due = shared.lock().queue.front().is_some_and(|(d, _)| match d {
                Some(d) => *d <= now,
                None => true,
            });
            if !more_due {
                res = sink.flush();
                dirty = false;
            }
        }
        let mut st = shared.lock();
        st.bytes -= size;
        st.busy = false;
        if let Err(e) = res {
            st.error.get_or_insert(e);
        }
        drop(st);
        shared.progress.notify_all();
    }
}

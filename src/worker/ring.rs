//! The io_uring set-up shared by the gateway's workers and the bundled load generator's
//! threads: which ring flags they ask the kernel for, and the fallback when it refuses them.
//!
//! Both run one monoio runtime per thread, and each ring is only ever entered by the thread
//! that built it. That is what makes these flags safe, and what pays for them:
//! - `COOP_TASKRUN`: a completion of one of the thread's sockets arrives from the network
//!   softirq; by default the kernel interrupts the thread (an IPI or a signal-style task-work
//!   notification) to post it. Cooperative task running defers that work to the thread's next
//!   `io_uring_enter`, which a runtime makes at least once per batch of ready tasks anyway.
//! - `TASKRUN_FLAG`: with deferred work pending, the kernel sets a flag in the submission
//!   ring, so a runtime that checks the rings without entering the kernel can still see it.
//! - `SINGLE_ISSUER` (6.0+): one thread submits, so the kernel skips the ring's submission
//!   lock and the task-context checks on every enter.
//!
//! `DEFER_TASKRUN` is not asked for: it runs completions only when the thread enters with
//! `GETEVENTS`, and monoio's submit-only path (taken whenever tasks are ready) does not ask
//! for events, so under load completions would wait until the runtime ran out of work.

use std::io;

/// Which io_uring set-up a runtime was built with.
#[derive(Debug)]
pub enum RingSetup {
    /// The flags of [`ring_setup`].
    Tuned,
    /// The kernel's default ring: the kernel refused the tuned set-up with this error
    /// (a kernel older than 6.0, or a sandbox that filters set-up flags).
    Default(io::Error),
}

impl RingSetup {
    /// Describes the set-up for a log line.
    pub fn describe(&self) -> String {
        match self {
            RingSetup::Tuned => "COOP_TASKRUN + TASKRUN_FLAG + SINGLE_ISSUER".to_string(),
            RingSetup::Default(refused) => {
                format!("the default ring (the tuned set-up was refused: {refused})")
            }
        }
    }
}

/// The io_uring set-up of a thread-per-core runtime: see the module documentation for why
/// each flag.
pub fn ring_setup() -> io_uring::Builder {
    let mut builder = io_uring::IoUring::builder();
    builder
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_single_issuer();
    builder
}

/// Builds a runtime with [`ring_setup`], or with the kernel's default ring when the kernel
/// refuses those flags.
///
/// `build` is called with the io_uring builder to use (`None`: monoio's default) and builds
/// the runtime; a caller whose driver may be epoll (monoio's fusion driver) falls back to epoll
/// inside `build` as it would without flags.
pub fn build_with_fallback<R>(
    build: impl FnMut(Option<io_uring::Builder>) -> io::Result<R>,
) -> io::Result<(R, RingSetup)> {
    build_preferring(ring_setup(), build)
}

/// [`build_with_fallback`] with the preferred set-up as a parameter, so a test can offer one
/// the kernel refuses.
fn build_preferring<R>(
    preferred: io_uring::Builder,
    mut build: impl FnMut(Option<io_uring::Builder>) -> io::Result<R>,
) -> io::Result<(R, RingSetup)> {
    match build(Some(preferred)) {
        Ok(runtime) => Ok((runtime, RingSetup::Tuned)),
        Err(refused) => build(None).map(|runtime| (runtime, RingSetup::Default(refused))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::uring_runtime;

    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    use monoio::net::{TcpListener, TcpStream};

    /// The kernel's (major, minor) version, from `/proc/sys/kernel/osrelease`.
    fn kernel_version() -> (u32, u32) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release
            .trim()
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    /// One loopback round trip on the runtime: a connection accepted, 5 bytes written by the
    /// client and read back by the server, with a timer in between.
    async fn loopback_round_trip() -> Vec<u8> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = monoio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            monoio::time::sleep(std::time::Duration::from_millis(5)).await;
            let (written, _) = stream.write_all(b"hello".to_vec()).await;
            written.unwrap();
            stream
        });
        let (mut accepted, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        while received.len() < 5 {
            let (read, buf) = accepted.read(Vec::with_capacity(16)).await;
            assert!(read.unwrap() > 0, "the client closed before sending");
            received.extend_from_slice(&buf);
        }
        drop(client.await);
        received
    }

    #[test]
    fn the_tuned_ring_is_accepted_where_the_kernel_has_its_flags_and_does_io() {
        if !monoio::utils::detect_uring() {
            eprintln!("io_uring is unavailable here: the epoll driver serves instead");
            return;
        }
        let (mut runtime, setup) = build_with_fallback(uring_runtime).unwrap();
        if kernel_version() >= (6, 0) {
            assert!(matches!(setup, RingSetup::Tuned), "{}", setup.describe());
        }
        assert_eq!(runtime.block_on(loopback_round_trip()), b"hello");
    }

    #[test]
    fn a_refused_set_up_falls_back_to_the_default_ring() {
        if !monoio::utils::detect_uring() {
            eprintln!("io_uring is unavailable here: the epoll driver serves instead");
            return;
        }
        // TASKRUN_FLAG without COOP_TASKRUN (or DEFER_TASKRUN) is invalid on every kernel.
        let mut refused = io_uring::IoUring::builder();
        refused.setup_taskrun_flag();
        let (mut runtime, setup) = build_preferring(refused, uring_runtime).unwrap();
        match &setup {
            RingSetup::Default(e) => assert_eq!(e.raw_os_error(), Some(libc::EINVAL)),
            RingSetup::Tuned => panic!("the kernel accepted TASKRUN_FLAG alone"),
        }
        assert!(setup.describe().contains("refused"));
        assert_eq!(runtime.block_on(loopback_round_trip()), b"hello");
    }

    #[test]
    fn a_failing_default_ring_reports_its_own_error() {
        let result = build_preferring(ring_setup(), |urb| -> io::Result<()> {
            Err(io::Error::other(if urb.is_some() {
                "tuned refused"
            } else {
                "default refused"
            }))
        });
        assert_eq!(result.unwrap_err().to_string(), "default refused");
    }
}

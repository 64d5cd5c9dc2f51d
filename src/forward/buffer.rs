//! The one buffer policy of every relay direction (passthrough, TLS-terminated and MTProto):
//! no buffer before the first byte; a small one for light traffic, given back as soon as the
//! direction has read all there was; a large one once a read fills the small one (a burst),
//! reused from read to read and wake to wake until [`QUIET`] passes without data.
//!
//! Most relayed connections sit idle most of the time (Telegram sessions for hours), so an
//! idle connection must hold no buffer; bulk transfers want large reads without a new buffer
//! per readiness wake; and one download must not leave a connection holding a large buffer
//! for the rest of its life. The small buffer is not kept for a quiet spell: measured with
//! `integration/bench-relay`, keeping it through the handshakes of 2000 new connections
//! left 8.2 KiB of RSS per idle connection instead of 4.8 (the allocator keeps the peak).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// How long a direction waits for data while holding a buffer before it gives the buffer
/// back. A pause inside a burst is far shorter; the next byte after it makes a small buffer
/// again.
pub const QUIET: Duration = Duration::from_secs(1);

/// One relay direction's buffer under the policy. `B` is the storage (a byte buffer, or the
/// MTProto download's record framer), made at a given size by `make`.
#[derive(Debug)]
pub struct ElasticBuffer<B, M> {
    held: Option<B>,
    /// Whether the buffer [`get`](Self::get) hands out is the large one (a burst is on).
    bursting: bool,
    small: usize,
    large: usize,
    make: M,
}

/// A plain byte buffer under the policy.
pub type ByteBuffer = ElasticBuffer<Box<[u8]>, fn(usize) -> Box<[u8]>>;

impl ByteBuffer {
    /// Byte buffers of `small` bytes, `large` during a burst; nothing is allocated yet.
    pub fn bytes(small: usize, large: usize) -> ByteBuffer {
        ElasticBuffer::new(small, large, |size| vec![0u8; size].into_boxed_slice())
    }
}

impl<B, M: Fn(usize) -> B> ElasticBuffer<B, M> {
    /// A direction that holds nothing yet; `make(size)` makes the storage when needed.
    pub fn new(small: usize, large: usize, make: M) -> Self {
        ElasticBuffer {
            held: None,
            bursting: false,
            small,
            large: large.max(small),
            make,
        }
    }

    /// The buffer, made now if none is held (small, or large during a burst): call it once
    /// bytes are waiting to be read.
    pub fn get(&mut self) -> &mut B {
        let size = if self.bursting {
            self.large
        } else {
            self.small
        };
        self.held.get_or_insert_with(|| (self.make)(size))
    }

    /// Reports that the last read filled the whole buffer: traffic is heavy, so the next
    /// read gets the large buffer. Call it once the buffer's content has been consumed (the
    /// small buffer is dropped here; the large one is made by the next [`get`](Self::get)).
    pub fn grow(&mut self) {
        if !self.bursting {
            self.bursting = true;
            self.held = None;
        }
    }

    /// Reports that the source has nothing more to read for now (its content consumed): a
    /// small buffer goes back at once, the large one stays for the rest of the burst.
    pub fn drained(&mut self) {
        if !self.bursting {
            self.held = None;
        }
    }

    /// The size the next [`get`](Self::get) hands out, if a buffer is held now.
    pub fn held_size(&self) -> Option<usize> {
        self.held.as_ref().map(|_| {
            if self.bursting {
                self.large
            } else {
                self.small
            }
        })
    }

    /// Waits for `ready` (the source becoming readable), pinned by the caller so that the
    /// direction's state holds it once. While a buffer is held (the large one, after
    /// [`drained`](Self::drained)), a wait longer than [`QUIET`] gives it back, and ends the
    /// burst, before waiting on.
    pub async fn wait<F: Future>(&mut self, mut ready: Pin<&mut F>) -> F::Output {
        if self.held.is_none() {
            return ready.await;
        }
        match tokio::time::timeout(QUIET, ready.as_mut()).await {
            Ok(value) => value,
            Err(_) => {
                self.held = None;
                self.bursting = false;
                ready.await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::pin::pin;

    #[test]
    fn nothing_is_made_before_the_first_byte() {
        let made = Cell::new(0);
        let buffer = ElasticBuffer::new(4, 64, |size| {
            made.set(made.get() + 1);
            vec![0u8; size]
        });
        assert_eq!(buffer.held_size(), None);
        drop(buffer);
        assert_eq!(made.get(), 0);
    }

    #[test]
    fn a_full_read_grows_the_buffer_and_it_is_then_reused() {
        let made = Cell::new(Vec::new());
        let mut buffer = ElasticBuffer::new(4, 64, |size| {
            let mut sizes = made.take();
            sizes.push(size);
            made.set(sizes);
            vec![0u8; size]
        });
        assert_eq!(buffer.get().len(), 4);
        assert_eq!(buffer.get().len(), 4, "reused, not made again");
        buffer.grow();
        assert_eq!(buffer.held_size(), None, "the small one is given back");
        for _ in 0..3 {
            assert_eq!(buffer.get().len(), 64);
            buffer.grow();
            buffer.drained();
            assert_eq!(buffer.held_size(), Some(64), "kept for the burst");
        }
        assert_eq!(made.take(), vec![4, 64], "one small, then one large buffer");
    }

    #[test]
    fn light_traffic_holds_no_buffer_between_reads() {
        let mut buffer = ByteBuffer::bytes(4, 64);
        buffer.get()[..2].copy_from_slice(b"hi");
        buffer.drained();
        assert_eq!(buffer.held_size(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_spell_gives_the_buffer_back_and_ends_the_burst() {
        let mut buffer = ByteBuffer::bytes(4, 64);
        buffer.get();
        buffer.grow();
        assert_eq!(buffer.get().len(), 64);
        buffer.drained();
        // Data within the quiet time: the buffer stays.
        buffer.wait(pin!(tokio::time::sleep(QUIET / 2))).await;
        assert_eq!(buffer.held_size(), Some(64));
        // Nothing for longer: it goes, and the wait still ends when the data comes.
        let started = tokio::time::Instant::now();
        buffer.wait(pin!(tokio::time::sleep(QUIET * 3))).await;
        assert_eq!(started.elapsed(), QUIET * 3);
        assert_eq!(buffer.held_size(), None);
        assert_eq!(buffer.get().len(), 4, "the next round starts small");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_without_a_buffer_takes_none() {
        let mut buffer = ByteBuffer::bytes(4, 64);
        let started = tokio::time::Instant::now();
        buffer.wait(pin!(tokio::time::sleep(QUIET * 5))).await;
        assert_eq!(started.elapsed(), QUIET * 5);
        assert_eq!(buffer.held_size(), None);
    }
}

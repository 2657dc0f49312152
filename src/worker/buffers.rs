//! The worker's pool of client read buffers.
//!
//! A plain keep-alive connection holds a read buffer only while bytes are arriving: it takes
//! one from here for a read and gives it back when it goes idle, so ten thousand idle
//! connections hold no buffers at all and a busy worker reuses the same few warm ones instead
//! of asking the allocator every time.

use std::cell::RefCell;

/// Free buffers of one size, owned by one worker thread (no locking).
pub(crate) struct BufferPool {
    free: RefCell<Vec<Vec<u8>>>,
    /// Capacity of every buffer handed out and of every buffer kept.
    size: usize,
    /// Most free buffers kept. Connections that all go idle at once return more than the busy
    /// path will take again soon; past this count they go back to the allocator, so a flood of
    /// connections cannot grow the pool without limit.
    max_free: usize,
}

impl BufferPool {
    /// A pool of `size`-byte buffers that keeps at most `max_free` of them when unused.
    pub(crate) fn new(size: usize, max_free: usize) -> Self {
        BufferPool {
            free: RefCell::new(Vec::with_capacity(max_free)),
            size,
            max_free,
        }
    }

    /// An empty buffer with room for `size` bytes: a pooled one if any, else a new one.
    pub(crate) fn take(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// Takes `buf` back for reuse. A buffer of another capacity (one that grew for a long head
    /// or a body, or none at all) is dropped, so the pool only ever holds `size`-byte buffers,
    /// as is one past `max_free`.
    pub(crate) fn put(&self, mut buf: Vec<u8>) {
        if buf.capacity() != self.size {
            return;
        }
        let mut free = self.free.borrow_mut();
        if free.len() < self.max_free {
            buf.clear();
            free.push(buf);
        }
    }

    /// Capacity of the buffers this pool hands out and keeps.
    pub(crate) fn buffer_size(&self) -> usize {
        self.size
    }

    /// Free buffers held now.
    #[cfg(test)]
    pub(crate) fn free_count(&self) -> usize {
        self.free.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_returned_buffers_keeps_at_most_max_free() {
        let pool = BufferPool::new(4096, 8);
        let taken: Vec<Vec<u8>> = (0..10_000).map(|_| pool.take()).collect();
        assert!(taken.iter().all(|b| b.capacity() == 4096 && b.is_empty()));
        for buf in taken {
            pool.put(buf);
        }
        assert_eq!(pool.free_count(), 8);
    }

    #[test]
    fn buffers_of_another_size_are_not_kept() {
        let pool = BufferPool::new(4096, 8);
        let mut grown = pool.take();
        grown.reserve(8192);
        pool.put(grown);
        pool.put(Vec::new());
        pool.put(Vec::with_capacity(1024));
        assert_eq!(pool.free_count(), 0);
    }

    #[test]
    fn a_returned_buffer_is_reused_cleared() {
        let pool = BufferPool::new(4096, 8);
        let mut buf = pool.take();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let addr = buf.as_ptr();
        pool.put(buf);
        let again = pool.take();
        assert_eq!(again.as_ptr(), addr, "the same allocation comes back");
        assert!(again.is_empty());
        assert_eq!(pool.free_count(), 0);
    }
}

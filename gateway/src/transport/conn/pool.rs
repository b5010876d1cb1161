//! Read buffers shared by the connections of one core.

use std::cell::RefCell;

/// Read buffers shared by the connections of one core. A buffer is
/// borrowed only while a read is in flight, so idle connections hold none.
pub struct BufPool {
    size: usize,
    free: RefCell<Vec<Vec<u8>>>,
}

impl BufPool {
    pub fn new(size: usize) -> Self {
        BufPool {
            size,
            free: RefCell::new(Vec::new()),
        }
    }

    pub fn take(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    pub fn give(&self, mut buf: Vec<u8>) {
        const MAX_POOLED: usize = 256;
        buf.clear();
        let mut free = self.free.borrow_mut();
        if free.len() < MAX_POOLED {
            free.push(buf);
        }
    }
}

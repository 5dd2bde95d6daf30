//! [`Aligned`]: the buffer that packed panels live in, starting on a cache line.
//!
//! The kernels load packed panels in 64-byte rows (a zmm register, an AMX tile row) and 32-byte
//! halves of them. `malloc` only promises 16 bytes of alignment (a large block from `mmap` starts
//! 16 bytes into its page), and a 64-byte row at 16 bytes past a line spans two lines: every
//! load then costs two L1 accesses, and every AMX tile load touches 32 lines instead of 16. A
//! buffer of whole cache lines also puts every later panel on a line when the panels' length is
//! a multiple of 64 bytes.

use alloc::alloc::{alloc_zeroed, handle_alloc_error, Layout};
use alloc::vec::Vec;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

/// One cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

const LINE: usize = core::mem::size_of::<Line>();

/// The element types of an [`Aligned`] buffer: the packed panels' bytes and words.
///
/// # Safety
/// Every bit pattern (all zeros included) is a valid value, the type has no padding, and its
/// alignment divides 64.
pub(crate) unsafe trait Word: Copy + 'static {}

// SAFETY: primitive integers: any bits, no padding, alignment at most 4.
unsafe impl Word for i8 {}
// SAFETY: as above.
unsafe impl Word for u8 {}
// SAFETY: as above.
unsafe impl Word for i32 {}

/// A buffer of `len` plain words whose first word starts a 64-byte cache line.
pub(crate) struct Aligned<T: Word> {
    lines: Vec<Line>,
    len: usize,
    word: PhantomData<T>,
}

impl<T: Word> Aligned<T> {
    /// An empty buffer (no allocation).
    pub(crate) const fn new() -> Self {
        Aligned { lines: Vec::new(), len: 0, word: PhantomData }
    }

    /// `len` zero words. The lines come from `alloc_zeroed` (fresh pages from the OS are zero
    /// already) rather than being filled one by one, since packers overwrite them anyway.
    pub(crate) fn zeroed(len: usize) -> Self {
        let count = Self::lines_for(len);
        if count == 0 {
            return Aligned { lines: Vec::new(), len, word: PhantomData };
        }
        let Ok(layout) = Layout::array::<Line>(count) else {
            // More than `isize::MAX` bytes: `Vec`'s own capacity-overflow panic, as `vec!`
            // would give for a buffer that size.
            return Aligned { lines: Vec::with_capacity(count), len, word: PhantomData };
        };
        // SAFETY: `layout` has a non-zero size. An all-zero `Line` is a valid value, so the
        // zeroed block is `count` initialized lines, allocated by the global allocator with
        // `Vec<Line>`'s layout for that capacity: `Vec::from_raw_parts`' requirements.
        let lines = unsafe {
            let ptr = alloc_zeroed(layout).cast::<Line>();
            if ptr.is_null() {
                handle_alloc_error(layout);
            }
            Vec::from_raw_parts(ptr, count, count)
        };
        Aligned { lines, len, word: PhantomData }
    }

    /// Makes the buffer `len` words long. One that grows is allocated afresh, zeroed
    /// ([`Aligned::zeroed`]); one that does not keeps its lines and its first `len` words.
    pub(crate) fn reset(&mut self, len: usize) {
        if Self::lines_for(len) > self.lines.len() {
            *self = Aligned::zeroed(len);
        } else {
            self.len = len;
        }
    }

    /// Makes the buffer `len` words long, all zero (keeping its lines when they suffice).
    pub(crate) fn reset_zeroed(&mut self, len: usize) {
        let count = Self::lines_for(len);
        if count > self.lines.len() {
            *self = Aligned::zeroed(len);
        } else {
            self.len = len;
            self.lines[..count].fill(Line([0; LINE]));
        }
    }

    /// Lines that hold `len` words.
    fn lines_for(len: usize) -> usize {
        len.saturating_mul(core::mem::size_of::<T>()).div_ceil(LINE)
    }
}

impl<T: Word> Deref for Aligned<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: the lines hold at least `len * size_of::<T>()` initialized bytes (`zeroed`,
        // `reset`), any bits are a valid `T`, and a line's alignment (64) is a multiple of
        // `T`'s (`Word`'s contract).
        unsafe { core::slice::from_raw_parts(self.lines.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Word> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow unique.
        unsafe { core::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Word> Clone for Aligned<T> {
    fn clone(&self) -> Self {
        Aligned { lines: self.lines.clone(), len: self.len, word: PhantomData }
    }
}

impl<T: Word + core::fmt::Debug> core::fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Word + PartialEq> PartialEq for Aligned<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Word + Eq> Eq for Aligned<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_line_and_holds_its_words() {
        for len in [1usize, 15, 16, 17, 1000, 1 << 20] {
            let mut b = Aligned::<i32>::zeroed(len);
            assert_eq!(b.as_ptr() as usize % 64, 0, "len {len}");
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&w| w == 0));
            for (i, w) in b.iter_mut().enumerate() {
                *w = i as i32;
            }
            assert!(b.iter().enumerate().all(|(i, &w)| w == i as i32));
            let c = b.clone();
            assert_eq!(c.as_ptr() as usize % 64, 0);
            assert_eq!(c, b);
        }
        assert!(Aligned::<u8>::zeroed(0).is_empty());
        assert!(Aligned::<i8>::new().is_empty());
    }

    #[test]
    fn reset_keeps_or_reallocates_and_reset_zeroed_clears() {
        let mut b = Aligned::<i8>::zeroed(100);
        b.fill(7);
        b.reset(64);
        assert_eq!(b.len(), 64);
        assert!(b.iter().all(|&w| w == 7), "shrinking keeps the words");
        b.reset_zeroed(80);
        assert_eq!(b.len(), 80);
        assert!(b.iter().all(|&w| w == 0));
        b.fill(3);
        b.reset(1000);
        assert_eq!(b.len(), 1000);
        assert!(b.iter().all(|&w| w == 0), "growing allocates zeroed lines");
        assert_eq!(b.as_ptr() as usize % 64, 0);
    }
}

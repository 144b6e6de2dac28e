//! [`Shared`]: the immutable, reference-counted element storage of a runtime tensor.
//!
//! Either an owned vector (every computed tensor), or — for fp16 and fp32 constants read from a
//! package — a view into the memory-mapped `weight.bin` the package reader handed over
//! (`mil::Buffer`). A mapped weight costs no anonymous memory: its pages belong to the file, the
//! kernel reads them on demand and may drop them under memory pressure. That is what lets the
//! interpreter hold a full-size fp32 chunk set (9 GB for E2B, 19 GB for E4B, twice that with the
//! prefill packages) on a machine with less free RAM than that. Elements are read in place
//! (little-endian targets; the reader's blobs are 64-byte aligned), so a mapped tensor computes
//! exactly what the same values in a vector compute.

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use half::f16;
use mil::Buffer;

/// Element types a [`Shared`] can hold; fp16 and fp32 can also be viewed in place in a byte buffer.
pub trait Element: Clone + Send + Sync + 'static {
    /// The elements of `bytes` in place, if this type supports mapping and `bytes` is aligned.
    fn view(bytes: &[u8]) -> Option<&[Self]>;
}

macro_rules! mappable {
    ($($t:ty),*) => {$(
        impl Element for $t {
            fn view(bytes: &[u8]) -> Option<&[Self]> {
                if cfg!(target_endian = "little") {
                    bytemuck::try_cast_slice(bytes).ok()
                } else {
                    None
                }
            }
        }
    )*};
}
macro_rules! owned_only {
    ($($t:ty),*) => {$(
        impl Element for $t {
            fn view(_: &[u8]) -> Option<&[Self]> {
                None
            }
        }
    )*};
}
mappable!(f16, f32);
owned_only!(i32, i16, u16, i8, u8, bool, String);

/// Immutable shared elements: cloning is O(1).
#[derive(Clone, Debug)]
pub struct Shared<T: Element>(Repr<T>);

#[derive(Clone, Debug)]
enum Repr<T> {
    Owned(Arc<Vec<T>>),
    /// `bytes` is aligned for `T` and a whole number of elements (checked at construction).
    Mapped(Buffer, PhantomData<T>),
}

impl<T: Element> Shared<T> {
    /// Own `v`.
    pub fn new(v: Vec<T>) -> Shared<T> {
        Shared(Repr::Owned(Arc::new(v)))
    }

    /// View `bytes` in place (no copy) if `T` can be mapped and `bytes` is aligned for it.
    pub fn mapped(bytes: &Buffer) -> Option<Shared<T>> {
        T::view(bytes.as_bytes())?;
        Some(Shared(Repr::Mapped(bytes.clone(), PhantomData)))
    }

    /// True if the elements live in a mapped buffer rather than in an owned vector.
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Repr::Mapped(..))
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        match &self.0 {
            Repr::Owned(v) => v.as_slice(),
            // alignment and length were checked when the view was made, and the buffer is
            // immutable
            Repr::Mapped(b, _) => T::view(b.as_bytes()).unwrap_or(&[]),
        }
    }
}

impl<T: Element> From<Vec<T>> for Shared<T> {
    fn from(v: Vec<T>) -> Shared<T> {
        Shared::new(v)
    }
}

impl<T: Element> Deref for Shared<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Element + PartialEq> PartialEq for Shared<T> {
    /// Element-wise equality, whatever the storage.
    fn eq(&self, other: &Shared<T>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Element> AsRef<[T]> for Shared<T> {
    fn as_ref(&self) -> &[T] {
        self.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_views_read_in_place_and_reject_misalignment() {
        let vals = [1.5f32, -2.0, 3.25];
        let bytes: Vec<u8> = vals.iter().flat_map(|x| x.to_le_bytes()).collect();
        let aligned = Buffer::from_vec(bytes.clone());
        let s = Shared::<f32>::mapped(&aligned).expect("aligned f32 bytes map");
        assert!(s.is_mapped());
        assert_eq!(&*s, &vals);
        assert!(std::ptr::eq(
            s.as_ptr().cast::<u8>(),
            aligned.as_bytes().as_ptr()
        ));
        // a length that is not a whole number of elements, and types that never map
        assert!(Shared::<f32>::mapped(&Buffer::from_vec(bytes[..5].to_vec())).is_none());
        assert!(Shared::<i32>::mapped(&aligned).is_none());
        let owned = Shared::new(vals.to_vec());
        assert!(!owned.is_mapped());
        assert_eq!(&*owned, &*s);
    }
}

//! The suite must fail deliberately broken stores: each fault below is a mistake a
//! backend could make, and the named cases must catch it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use blockstore::backend::{Backend, Checked, Fields, MemoryBackend};
use blockstore::conformance::{Target, CASES};
use blockstore::{BlockRef, Blocks, Error, ErrorKind, Op, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// No fault: the control. The backend relies on the `Backend` trait's default
    /// bodies (`read_range_into`, `list`), which must pass too.
    None,
    /// Listings come back in insertion-independent but unsorted (reversed) order.
    UnsortedListing,
    /// Listings are ordered segment by segment, as a naive depth-first directory walk.
    DepthFirstListing,
    /// Range ends are clamped one byte short of the block's end.
    RangeClampedShort,
    /// The offset is checked against the size before looking the block up, so an absent
    /// block reports InvalidRange instead of NotFound.
    NotFoundAfterRange,
}

/// A backend with one deliberate mistake, behind the real `Checked` layer.
struct Faulty {
    inner: MemoryBackend,
    fault: Fault,
}

impl Faulty {
    fn reorder(&self, mut refs: Vec<BlockRef>) -> Vec<BlockRef> {
        match self.fault {
            Fault::UnsortedListing => refs.reverse(),
            Fault::DepthFirstListing => {
                refs.sort_by(|a, b| a.key.split('/').cmp(b.key.split('/')));
            }
            _ => {}
        }
        refs
    }
}

impl Backend for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }
    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        self.inner.write(key, data)
    }
    fn read(&self, key: &str) -> Result<Vec<u8>> {
        self.inner.read(key)
    }
    fn read_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        match self.fault {
            Fault::RangeClampedShort => {
                let mut block = self.inner.read_range(key, offset, length)?;
                let size = self.inner.size(key)?;
                if offset + block.len() as u64 == size && block.len() > 1 {
                    block.pop();
                }
                Ok(block)
            }
            Fault::NotFoundAfterRange => {
                let size = self.inner.size(key).unwrap_or(0);
                if offset >= size {
                    return Err(Error::new(ErrorKind::InvalidRange, Op::ReadRange).with_key(key));
                }
                self.inner.read_range(key, offset, length)
            }
            _ => self.inner.read_range(key, offset, length),
        }
    }
    fn size(&self, key: &str) -> Result<u64> {
        self.inner.size(key)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }
    fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        self.inner.delete_prefix(prefix)
    }
    fn scan(&self, prefix: &str, start_after: Option<&str>, fields: Fields) -> Result<Blocks<'_>> {
        let all: Vec<BlockRef> = self
            .inner
            .scan(prefix, start_after, fields)?
            .collect::<Result<_>>()?;
        Ok(Box::new(self.reorder(all).into_iter().map(Ok)))
    }
    fn health(&self) -> Result<()> {
        self.inner.health()
    }
}

/// The names of the cases that fail against a store with `fault`.
fn failing_cases(fault: Fault) -> Vec<&'static str> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let failed = CASES
        .iter()
        .filter(|(_, case)| {
            let target = Target::new(
                Arc::new(Checked::from_backend(Faulty {
                    inner: MemoryBackend::default(),
                    fault,
                })),
                false,
            );
            catch_unwind(AssertUnwindSafe(|| case(&target))).is_err()
        })
        .map(|(name, _)| *name)
        .collect();
    std::panic::set_hook(hook);
    failed
}

#[track_caller]
fn assert_caught(fault: Fault, must_include: &[&str]) {
    let failed = failing_cases(fault);
    println!("{fault:?} is caught by: {failed:?}");
    for case in must_include {
        assert!(
            failed.contains(case),
            "{fault:?} was not caught by {case}; caught by {failed:?}"
        );
    }
}

// One test, so the panic hook swap never races with another test's panic output.
#[test]
fn broken_stores_fail_the_suite() {
    assert_eq!(
        failing_cases(Fault::None),
        Vec::<&str>::new(),
        "a correct wrapper fails the suite"
    );
    assert_caught(
        Fault::UnsortedListing,
        &["prefix_semantics_and_order", "sizes_and_list_blocks"],
    );
    assert_caught(Fault::DepthFirstListing, &["prefix_semantics_and_order"]);
    assert_caught(
        Fault::RangeClampedShort,
        &["range_rules", "range_into_buffers"],
    );
    assert_caught(
        Fault::NotFoundAfterRange,
        &["absent_block_is_not_found", "range_check_order"],
    );
}

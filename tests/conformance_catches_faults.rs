//! The suite must fail deliberately broken stores: each fault below is a mistake a
//! backend could make, and the named cases must catch it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use blockstore::conformance::{Target, CASES};
use blockstore::{BlockRef, BlockStore, Error, ErrorKind, MemoryStore, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// No fault: the control. The wrapper relies on the trait's default bodies
    /// (`read_block_range_into`, `list_by_prefix`, `content_md5`), which must pass too.
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

struct Faulty {
    inner: MemoryStore,
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

impl BlockStore for Faulty {
    fn write_block(&self, key: &str, data: &[u8]) -> Result<()> {
        self.inner.write_block(key, data)
    }
    fn read_block(&self, key: &str) -> Result<Vec<u8>> {
        self.inner.read_block(key)
    }
    fn read_block_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        match self.fault {
            Fault::RangeClampedShort => {
                let block = self.inner.read_block_range(key, offset, length)?;
                let size = self.inner.block_size(key)?;
                let mut block = block;
                if offset + block.len() as u64 == size && block.len() > 1 {
                    block.pop();
                }
                Ok(block)
            }
            Fault::NotFoundAfterRange if length > 0 => {
                let size = self.inner.block_size(key).unwrap_or(0);
                if offset >= size {
                    return Err(Error::new(ErrorKind::InvalidRange, "read range").with_key(key));
                }
                self.inner.read_block_range(key, offset, length)
            }
            _ => self.inner.read_block_range(key, offset, length),
        }
    }
    fn block_size(&self, key: &str) -> Result<u64> {
        self.inner.block_size(key)
    }
    fn delete_block(&self, key: &str) -> Result<()> {
        self.inner.delete_block(key)
    }
    fn delete_by_prefix(&self, prefix: &str) -> Result<u64> {
        self.inner.delete_by_prefix(prefix)
    }
    fn list_blocks(&self, prefix: &str) -> Result<Vec<BlockRef>> {
        Ok(self.reorder(self.inner.list_blocks(prefix)?))
    }
    fn health_check(&self) -> Result<()> {
        self.inner.health_check()
    }
    fn close(&self) -> Result<()> {
        self.inner.close()
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
                Arc::new(Faulty {
                    inner: MemoryStore::new(),
                    fault,
                }),
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

//! What a store reports about calls that do not end the ordinary way: a backend call
//! that panics, and a streaming listing whose error comes after its first page.
//! A backend of our own shows that any backend gets this from the `Checked` layer.

use std::panic::{catch_unwind, AssertUnwindSafe};

use blockstore::backend::{Backend, Checked, Fields, MemoryBackend};
use blockstore::{BlockRef, BlockStore, Blocks, Error, ErrorKind, Op, Result};

/// The memory backend, except that reading `panic/…` panics and a scan of `late/`
/// fails after its first two blocks.
#[derive(Default)]
struct Wobbly(MemoryBackend);

impl Backend for Wobbly {
    fn name(&self) -> &'static str {
        "wobbly"
    }
    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        self.0.write(key, data)
    }
    fn read(&self, key: &str) -> Result<Vec<u8>> {
        if key.starts_with("panic/") {
            panic!("the backend fell over on {key}");
        }
        self.0.read(key)
    }
    fn read_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.0.read_range(key, offset, length)
    }
    fn size(&self, key: &str) -> Result<u64> {
        self.0.size(key)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.0.delete(key)
    }
    fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        self.0.delete_prefix(prefix)
    }
    fn scan(&self, prefix: &str, start_after: Option<&str>, fields: Fields) -> Result<Blocks<'_>> {
        let inner = self.0.scan(prefix, start_after, fields)?;
        if prefix != "late/" {
            return Ok(inner);
        }
        let failure: Result<BlockRef> = Err(Error::new(ErrorKind::Backend, Op::List)
            .with_detail("the second page could not be read"));
        Ok(Box::new(inner.take(2).chain(std::iter::once(failure))))
    }
    fn health(&self) -> Result<()> {
        self.0.health()
    }
}

fn store() -> Checked<Wobbly> {
    Checked::from_backend(Wobbly::default())
}

#[test]
fn a_panicking_call_counts_as_an_error_and_leaves_nothing_in_flight() {
    let store = store();
    store.write_block("panic/k", b"x").unwrap();
    let panicked = catch_unwind(AssertUnwindSafe(|| store.read_block("panic/k")));
    assert!(panicked.is_err());
    let report = store.report();
    let read = report.op(Op::Read).expect("the read was counted");
    assert_eq!(read.calls, 1);
    assert_eq!(read.in_flight, 0, "{report:?}");
    assert_eq!(read.errors, vec![(ErrorKind::Backend, 1)]);
    assert!(
        report.recent_errors[0].message.contains("panicked"),
        "{report:?}"
    );
    // The store goes on serving.
    assert_eq!(
        store.read_block("p/k").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn a_scan_is_one_call_from_its_first_block_to_its_end() {
    let store = store();
    for i in 0..5 {
        store.write_block(&format!("late/{i}"), b"x").unwrap();
        store.write_block(&format!("fine/{i}"), b"x").unwrap();
    }
    let mut scan = store.scan("late/", None).unwrap();
    assert!(scan.next().unwrap().is_ok());
    assert_eq!(
        store.report().op(Op::List).unwrap().in_flight,
        1,
        "an open scan is a call in flight"
    );
    assert!(scan.next().unwrap().is_ok());
    assert_eq!(scan.next().unwrap().unwrap_err().kind(), ErrorKind::Backend);
    assert!(scan.next().is_none());
    let list = store.report().op(Op::List).cloned().unwrap();
    assert_eq!((list.calls, list.in_flight), (1, 0));
    assert_eq!(
        list.errors,
        vec![(ErrorKind::Backend, 1)],
        "the late error counts"
    );

    // A scan read to its end, and one dropped half-way, end as successes.
    assert_eq!(store.scan("fine/", None).unwrap().count(), 5);
    let mut half = store.scan("fine/", None).unwrap();
    half.next();
    drop(half);
    let list = store.report().op(Op::List).cloned().unwrap();
    assert_eq!((list.calls, list.in_flight), (3, 0));
    assert_eq!(list.errors, vec![(ErrorKind::Backend, 1)]);
}

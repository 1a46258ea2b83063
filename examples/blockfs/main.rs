//! `blockfs`: a small FUSE file system over any configured block store, written to be
//! read as a guide to using the crate from a daemon.
//!
//! ```text
//! cargo run --release -p blockstore-examples --features fuse --example blockfs -- STORE.toml MOUNTPOINT
//! ```
//!
//! Files are cut into 4 MiB blocks stored under `blockfs/files/{inode}/chunk-0/block-{n}`
//! (`block_key`); the directory tree and file sizes live in one manifest block,
//! `blockfs/manifest`, rewritten whenever they change. Full blocks are flushed in the
//! background through a pool, whose per-key order makes a later flush of a block win
//! and a read after a flush see it; a file's partial last block is flushed when the file
//! is closed or synced. Sequential reads fetch the next blocks ahead of time. Errors
//! reach programs as the errno `Error::file_errno` gives.
//!
//! It runs until unmounted (`umount MOUNTPOINT`), then writes the manifest and closes
//! the store.

mod fs;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use blockstore::{BlockStore, Config, Pool, PoolConfig};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(config), Some(mountpoint)) = (args.next(), args.next()) else {
        eprintln!("usage: blockfs STORE.toml MOUNTPOINT");
        return ExitCode::from(2);
    };
    match run(PathBuf::from(config), PathBuf::from(mountpoint)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blockfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: PathBuf, mountpoint: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(&config)?;
    // The store itself, without a pool: the file system makes its own, sharing it.
    let pool_config = config.pool.unwrap_or(PoolConfig {
        workers: 16,
        queue_capacity: 64,
    });
    let store = Config {
        pool: None,
        ..config
    }
    .open()?
    .store();
    store.health_check()?;
    let pool = Arc::new(Pool::sharing(store.clone(), pool_config)?);
    let filesystem = fs::BlockFs::load(store.clone(), pool.clone())?;
    let mut options = fuser::Config::default();
    options.mount_options = vec![
        fuser::MountOption::FSName("blockfs".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    options.n_threads = Some(4);
    // Returns once the file system is unmounted; `destroy` has then saved the manifest.
    fuser::mount(filesystem, &mountpoint, &options)?;
    pool.close()?;
    store.close()?;
    Ok(())
}

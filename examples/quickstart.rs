//! Writes, reads, lists and deletes a few blocks with the filesystem store in a local
//! folder (`./blockstore-data`, or the folder given as the first argument), and removes
//! the folder again if it made it.

use std::error::Error;

use blockstore::{block_key, open, Config};

fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "blockstore-data".to_owned());
    let made_it = !std::path::Path::new(&dir).exists();
    let store = open(&Config::filesystem(&dir))?;
    store.health_check()?;

    // Four 64 KiB blocks of one file, in the layout a file-system cache uses.
    let keys: Vec<String> = (0..4)
        .map(|b| block_key("quickstart/file.bin", 0, b))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        store.write_block(key, &vec![i as u8; 64 * 1024])?;
    }
    println!("wrote {} blocks under {dir}/quickstart/", keys.len());

    let block = store.read_block(&keys[2])?;
    let head = store.read_block_range(&keys[2], 0, 16)?;
    println!(
        "read {}: {} bytes, first bytes {:?}",
        keys[2],
        block.len(),
        &head[..4]
    );

    for b in store.list_blocks("quickstart/")? {
        println!("  {} ({} bytes)", b.key, b.size);
    }

    let removed = store.delete_by_prefix("quickstart/")?;
    println!(
        "deleted {removed} blocks; {} left",
        store.list_by_prefix("quickstart/")?.len()
    );
    store.close()?;
    if made_it {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

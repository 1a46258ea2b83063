//! The file system: the tree in memory (saved as the manifest block), file data as
//! 4 MiB blocks, flushed in the background and read ahead through the pool.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blockstore::pool::{from_fn, Handle, Read, Write};
use blockstore::{
    block_key, content_prefix, BlockStore, Error, ErrorKind, Pool, Result, BLOCK_SIZE,
};
use bytes::Bytes;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use serde::{Deserialize, Serialize};

/// The block that holds the tree.
pub const MANIFEST: &str = "blockfs/manifest";
/// The content id of every file is `blockfs/files/{inode}`.
pub const FILES: &str = "blockfs/files";
const BLOCK: u64 = BLOCK_SIZE as u64;
/// Blocks fetched ahead of a sequential reader, unless `BLOCKFS_READ_AHEAD` says how
/// many (0 turns it off, to measure what it brings).
const READ_AHEAD: u64 = 4;
/// Clean blocks kept per open file.
const CACHED: usize = 8;
const TTL: Duration = Duration::from_secs(1);

/// The content id of a file's blocks.
fn content_id(ino: u64) -> String {
    format!("{FILES}/{ino}")
}

fn key(ino: u64, block: u64) -> String {
    block_key(&content_id(ino), 0, block)
}

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.file_errno())
}

/// One file or directory, as the manifest keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Node {
    ino: u64,
    parent: u64,
    name: String,
    dir: bool,
    size: u64,
    mode: u16,
    mtime_ns: u64,
}

/// The manifest block: every node, and the next inode number.
#[derive(Serialize, Deserialize)]
struct Manifest {
    next_ino: u64,
    nodes: Vec<Node>,
}

/// The tree: nodes by inode, and each directory's entries by name.
struct Tree {
    nodes: HashMap<u64, Node>,
    children: HashMap<u64, BTreeMap<String, u64>>,
    next_ino: u64,
}

impl Tree {
    fn empty() -> Tree {
        let root = Node {
            ino: INodeNo::ROOT.0,
            parent: INodeNo::ROOT.0,
            name: String::new(),
            dir: true,
            size: 0,
            mode: 0o755,
            mtime_ns: now_ns(),
        };
        Tree::from_nodes(vec![root], INodeNo::ROOT.0 + 1)
    }

    fn from_nodes(nodes: Vec<Node>, next_ino: u64) -> Tree {
        let mut children: HashMap<u64, BTreeMap<String, u64>> = HashMap::new();
        for node in &nodes {
            if node.dir {
                children.entry(node.ino).or_default();
            }
            if node.ino != INodeNo::ROOT.0 {
                children
                    .entry(node.parent)
                    .or_default()
                    .insert(node.name.clone(), node.ino);
            }
        }
        Tree {
            nodes: nodes.into_iter().map(|n| (n.ino, n)).collect(),
            children,
            next_ino,
        }
    }

    fn manifest(&self) -> Manifest {
        Manifest {
            next_ino: self.next_ino,
            nodes: self.nodes.values().cloned().collect(),
        }
    }

    fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.children.get(&parent)?.get(name.to_str()?).copied()
    }

    fn add(&mut self, parent: u64, name: &str, dir: bool, mode: u16) -> Node {
        let ino = self.next_ino;
        self.next_ino += 1;
        let node = Node {
            ino,
            parent,
            name: name.to_owned(),
            dir,
            size: 0,
            mode,
            mtime_ns: now_ns(),
        };
        self.nodes.insert(ino, node.clone());
        self.children
            .entry(parent)
            .or_default()
            .insert(name.to_owned(), ino);
        if dir {
            self.children.entry(ino).or_default();
        }
        node
    }

    fn remove(&mut self, parent: u64, name: &str) -> Option<Node> {
        let ino = self.children.get_mut(&parent)?.remove(name)?;
        self.children.remove(&ino);
        self.nodes.remove(&ino)
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn attr(node: &Node) -> FileAttr {
    let time = UNIX_EPOCH + Duration::from_nanos(node.mtime_ns);
    FileAttr {
        ino: INodeNo(node.ino),
        size: node.size,
        blocks: node.size.div_ceil(512),
        atime: time,
        mtime: time,
        ctime: time,
        crtime: time,
        kind: if node.dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: node.mode,
        nlink: if node.dir { 2 } else { 1 },
        uid: unsafe { libc::geteuid() },
        gid: unsafe { libc::getegid() },
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// What an open file holds besides the store: blocks being written, flushes not yet
/// checked, clean blocks read, and blocks being read ahead.
#[derive(Default)]
struct FileData {
    /// Blocks written to but not yet handed to the pool (a partial last block, or one
    /// being filled).
    dirty: BTreeMap<u64, Vec<u8>>,
    /// Background flushes of full blocks; checked at fsync and close.
    flushes: Vec<Handle<()>>,
    /// The first error of a flush, for the next fsync or close to report.
    failed: Option<Error>,
    cache: BTreeMap<u64, Bytes>,
    ahead: HashMap<u64, Handle<Vec<u8>>>,
    /// Where a sequential read would go on.
    next_read: u64,
}

/// The file system, over a store and a pool that shares it.
pub struct BlockFs {
    store: Arc<dyn BlockStore>,
    pool: Arc<Pool>,
    read_ahead: u64,
    tree: Mutex<Tree>,
    files: Mutex<HashMap<u64, Arc<Mutex<FileData>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl BlockFs {
    /// The file system saved in `store`'s manifest, or an empty one.
    pub fn load(store: Arc<dyn BlockStore>, pool: Arc<Pool>) -> Result<BlockFs> {
        let tree = match store.read_block(MANIFEST) {
            Ok(bytes) => {
                let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::new(ErrorKind::Backend, blockstore::Op::Read)
                        .with_key(MANIFEST)
                        .with_detail(format!("the manifest does not parse: {e}"))
                })?;
                Tree::from_nodes(manifest.nodes, manifest.next_ino)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Tree::empty(),
            Err(e) => return Err(e),
        };
        let read_ahead = std::env::var("BLOCKFS_READ_AHEAD")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(READ_AHEAD);
        Ok(BlockFs {
            store,
            pool,
            read_ahead,
            tree: Mutex::new(tree),
            files: Mutex::new(HashMap::new()),
        })
    }

    fn data(&self, ino: u64) -> Arc<Mutex<FileData>> {
        lock(&self.files).entry(ino).or_default().clone()
    }

    /// Writes the manifest: the tree as it is now.
    fn save(&self) -> Result<()> {
        let manifest = lock(&self.tree).manifest();
        let bytes = serde_json::to_vec(&manifest).map_err(|e| {
            Error::new(ErrorKind::Backend, blockstore::Op::Write).with_detail(e.to_string())
        })?;
        self.store.write_block(MANIFEST, &bytes)
    }

    fn size(&self, ino: u64) -> Option<u64> {
        lock(&self.tree).nodes.get(&ino).map(|n| n.size)
    }

    /// Block `b` of the file as it is now: being written, cached, read ahead, or read
    /// from the store (the pool's per-key order makes a read see every flush submitted
    /// before it). An absent block is a hole: no bytes.
    fn block(&self, ino: u64, b: u64, fd: &mut FileData) -> Result<Bytes> {
        if let Some(dirty) = fd.dirty.get(&b) {
            return Ok(Bytes::copy_from_slice(dirty));
        }
        if let Some(cached) = fd.cache.get(&b) {
            return Ok(cached.clone());
        }
        let read = match fd.ahead.remove(&b) {
            Some(handle) => handle.wait(),
            None => self.pool.submit(Read { key: key(ino, b) })?.wait(),
        };
        let bytes = match read {
            Ok(block) => Bytes::from(block),
            Err(e) if e.kind() == ErrorKind::NotFound => Bytes::new(),
            Err(e) => return Err(e),
        };
        fd.cache.insert(b, bytes.clone());
        while fd.cache.len() > CACHED {
            fd.cache.pop_first();
        }
        Ok(bytes)
    }

    fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let file_size = self.size(ino).unwrap_or(0);
        let end = (offset + size as u64).min(file_size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let data = self.data(ino);
        let mut fd = lock(&data);
        let sequential = offset == fd.next_read;
        fd.next_read = end;
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = offset;
        while pos < end {
            let b = pos / BLOCK;
            let within = (pos % BLOCK) as usize;
            let take = ((end - pos).min(BLOCK - within as u64)) as usize;
            let block = self.block(ino, b, &mut fd)?;
            let have = block.len().saturating_sub(within).min(take);
            if have > 0 {
                out.extend_from_slice(&block[within..within + have]);
            }
            // Past the stored bytes of a block: a hole, zeros.
            out.resize(out.len() + (take - have), 0);
            pos += take as u64;
        }
        if sequential && self.read_ahead > 0 {
            // Fetch the next blocks while the reader works on these.
            let last = (file_size.saturating_sub(1)) / BLOCK;
            for b in (end / BLOCK + 1)..=(end / BLOCK + self.read_ahead).min(last) {
                if !fd.ahead.contains_key(&b)
                    && !fd.cache.contains_key(&b)
                    && !fd.dirty.contains_key(&b)
                {
                    let handle = self.pool.submit(Read { key: key(ino, b) })?;
                    fd.ahead.insert(b, handle);
                }
            }
        }
        Ok(out)
    }

    fn write(&self, ino: u64, offset: u64, data: &[u8]) -> Result<()> {
        let old_size = self.size(ino).unwrap_or(0);
        let file = self.data(ino);
        let mut fd = lock(&file);
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let b = pos / BLOCK;
            let within = (pos % BLOCK) as usize;
            let take = rest.len().min(BLOCK_SIZE - within);
            // A block the store has, written only in part: start from its bytes.
            let whole = within == 0 && take == BLOCK_SIZE;
            let start = if !fd.dirty.contains_key(&b) && !whole && b * BLOCK < old_size {
                self.block(ino, b, &mut fd)?.to_vec()
            } else {
                Vec::new()
            };
            fd.cache.remove(&b);
            fd.ahead.remove(&b);
            let block = fd.dirty.entry(b).or_insert(start);
            if block.len() < within + take {
                block.resize(within + take, 0);
            }
            block[within..within + take].copy_from_slice(&rest[..take]);
            if block.len() == BLOCK_SIZE {
                // Full: flush it in the background. A later flush of the same block is
                // queued behind this one and wins.
                let full = std::mem::take(block);
                fd.dirty.remove(&b);
                let handle = self.pool.submit(Write::new(key(ino, b), full))?;
                fd.flushes.push(handle);
            }
            pos += take as u64;
            rest = &rest[take..];
        }
        // Forget flushes that have finished, keeping the first error.
        let flushes = std::mem::take(&mut fd.flushes);
        for handle in flushes {
            if handle.is_done() {
                if let Err(e) = handle.wait() {
                    fd.failed.get_or_insert(e);
                }
            } else {
                fd.flushes.push(handle);
            }
        }
        drop(fd);
        let mut tree = lock(&self.tree);
        if let Some(node) = tree.nodes.get_mut(&ino) {
            node.size = node.size.max(offset + data.len() as u64);
            node.mtime_ns = now_ns();
        }
        Ok(())
    }

    /// Hands every block still being written to the pool and waits for every flush:
    /// once it returns, the file's data is in the store.
    fn sync_data(&self, ino: u64) -> Result<()> {
        let file = self.data(ino);
        let mut fd = lock(&file);
        let dirty = std::mem::take(&mut fd.dirty);
        for (b, block) in dirty {
            let handle = self.pool.submit(Write::new(key(ino, b), block))?;
            fd.flushes.push(handle);
        }
        let mut first = fd.failed.take();
        for handle in std::mem::take(&mut fd.flushes) {
            if let Err(e) = handle.wait() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The file's data and the manifest, in the store.
    fn sync(&self, ino: u64) -> Result<()> {
        self.sync_data(ino)?;
        self.save()
    }

    /// Cuts or grows a file to `size`: blocks past the end go, the new last block is
    /// cut. A grown file reads zeros past its old end.
    fn truncate(&self, ino: u64, size: u64) -> Result<()> {
        let old = self.size(ino).unwrap_or(0);
        if size < old {
            self.sync_data(ino)?;
            let file = self.data(ino);
            let mut fd = lock(&file);
            fd.cache.clear();
            fd.ahead.clear();
            let first_gone = size.div_ceil(BLOCK);
            for b in first_gone..old.div_ceil(BLOCK) {
                self.pool
                    .submit(blockstore::pool::Delete { key: key(ino, b) })?
                    .wait()?;
            }
            if !size.is_multiple_of(BLOCK) {
                let b = size / BLOCK;
                let mut last = self.block(ino, b, &mut fd)?.to_vec();
                last.truncate((size % BLOCK) as usize);
                fd.cache.remove(&b);
                fd.dirty.insert(b, last);
            }
        }
        let mut tree = lock(&self.tree);
        if let Some(node) = tree.nodes.get_mut(&ino) {
            node.size = size;
            node.mtime_ns = now_ns();
        }
        Ok(())
    }

    /// Deletes a removed file's blocks, after its flushes (a prefix delete is not
    /// ordered with the jobs on its keys, so a flush in flight could land after it).
    fn forget_data(&self, ino: u64) -> Result<()> {
        let _ = self.sync_data(ino);
        lock(&self.files).remove(&ino);
        let prefix = content_prefix(&content_id(ino));
        self.pool
            .submit(from_fn(move |s: &dyn BlockStore| {
                s.delete_by_prefix(&prefix)
            }))?
            .wait()
            .map(|_| ())
    }

    fn entry_of(&self, ino: u64) -> Option<FileAttr> {
        lock(&self.tree).nodes.get(&ino).map(attr)
    }
}

impl fuser::Filesystem for BlockFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Large requests: whole blocks move in fewer calls.
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn destroy(&mut self) {
        let files: Vec<u64> = lock(&self.files).keys().copied().collect();
        for ino in files {
            if let Err(e) = self.sync_data(ino) {
                eprintln!("blockfs: flushing inode {ino} at unmount: {e}");
            }
        }
        if let Err(e) = self.save() {
            eprintln!("blockfs: saving the manifest at unmount: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let tree = lock(&self.tree);
        match tree
            .child(parent.0, name)
            .and_then(|ino| tree.nodes.get(&ino))
        {
            Some(node) => reply.entry(&TTL, &attr(node), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.entry_of(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if let Some(size) = size {
            if let Err(e) = self.truncate(ino.0, size) {
                return reply.error(errno(&e));
            }
        }
        if let Some(mode) = mode {
            if let Some(node) = lock(&self.tree).nodes.get_mut(&ino.0) {
                node.mode = (mode & 0o7777) as u16;
            }
        }
        match self.entry_of(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let tree = lock(&self.tree);
        let Some(children) = tree.children.get(&ino.0) else {
            return reply.error(Errno::ENOTDIR);
        };
        let parent = tree.nodes.get(&ino.0).map_or(ino.0, |n| n.parent);
        let mut entries = vec![
            (ino.0, FileType::Directory, ".".to_owned()),
            (parent, FileType::Directory, "..".to_owned()),
        ];
        for (name, child) in children {
            let kind = match tree.nodes.get(child) {
                Some(n) if n.dir => FileType::Directory,
                _ => FileType::RegularFile,
            };
            entries.push((*child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::EINVAL);
        };
        let node = {
            let mut tree = lock(&self.tree);
            if tree.child(parent.0, name.as_ref()).is_some() {
                return reply.error(Errno::EEXIST);
            }
            tree.add(parent.0, name, true, (mode & !umask & 0o7777) as u16)
        };
        match self.save() {
            Ok(()) => reply.entry(&TTL, &attr(&node), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::EINVAL);
        };
        let node = {
            let mut tree = lock(&self.tree);
            if tree.child(parent.0, name.as_ref()).is_some() {
                return reply.error(Errno::EEXIST);
            }
            tree.add(parent.0, name, false, (mode & !umask & 0o7777) as u16)
        };
        // The manifest is saved when the file is closed.
        reply.created(
            &TTL,
            &attr(&node),
            Generation(0),
            FileHandle(0),
            FopenFlags::empty(),
        );
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.write(ino.0, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2): the file's data and the tree are in the store before it returns.
        match self.sync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.sync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.sync_data(ino.0);
        // A closed file keeps no cache.
        lock(&self.files).remove(&ino.0);
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let removed = {
            let mut tree = lock(&self.tree);
            match name.to_str() {
                Some(name) => tree.remove(parent.0, name),
                None => None,
            }
        };
        let Some(node) = removed else {
            return reply.error(Errno::ENOENT);
        };
        let result = self.forget_data(node.ino).and_then(|()| self.save());
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        {
            let mut tree = lock(&self.tree);
            let Some(ino) = tree.child(parent.0, name) else {
                return reply.error(Errno::ENOENT);
            };
            if tree.children.get(&ino).is_some_and(|c| !c.is_empty()) {
                return reply.error(Errno::ENOTEMPTY);
            }
            tree.remove(parent.0, name.to_str().unwrap_or_default());
        }
        match self.save() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (Some(name), Some(newname)) = (name.to_str(), newname.to_str()) else {
            return reply.error(Errno::EINVAL);
        };
        let replaced = {
            let mut tree = lock(&self.tree);
            let Some(ino) = tree.child(parent.0, name.as_ref()) else {
                return reply.error(Errno::ENOENT);
            };
            if let Some(target) = tree.child(newparent.0, newname.as_ref()) {
                if tree.children.get(&target).is_some_and(|c| !c.is_empty()) {
                    return reply.error(Errno::ENOTEMPTY);
                }
            }
            let replaced = tree.remove(newparent.0, newname);
            tree.children.get_mut(&parent.0).map(|c| c.remove(name));
            tree.children
                .entry(newparent.0)
                .or_default()
                .insert(newname.to_owned(), ino);
            if let Some(node) = tree.nodes.get_mut(&ino) {
                node.parent = newparent.0;
                node.name = newname.to_owned();
            }
            replaced
        };
        let result = match replaced {
            Some(old) if !old.dir => self.forget_data(old.ino),
            _ => Ok(()),
        }
        .and_then(|()| self.save());
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

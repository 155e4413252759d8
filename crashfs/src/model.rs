//! The crash file system's state: the namespace (as the kernel sees it now, and as the last
//! directory fsyncs made it durable), and for each file its durable content, its current
//! content and the log of operations between the two.
//!
//! Backing directory layout while mounted:
//! - the tree found at mount time (the durable tree of the previous mount), untouched;
//! - `.crashfs/durable/<ino>`: the durable content of each file (a hard link to its tree name
//!   for files found at mount time);
//! - `.crashfs/current/<ino>`: the current content of a file once it has been changed (a copy of
//!   the durable content, then every write): reads and writes go here.
//!
//! A completed fsync/fdatasync replays the file's log onto its durable content; a directory
//! fsync makes the directory's current entries its durable entries. At unmount or crash the
//! tree is rebuilt from the durable entries ([`Model::finish`]) and `.crashfs` is removed, so
//! between mounts the backing directory holds exactly the durable image.

use crate::oplog::Op;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Inode number as given to the kernel.
pub type Ino = u64;
/// The root directory's inode number (FUSE's convention).
pub const ROOT: Ino = 1;
/// Name of the file system's own directory inside the backing directory (hidden from the mount).
pub const META_DIR: &str = ".crashfs";

fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// A regular file.
#[derive(Debug)]
pub(crate) struct FileNode {
    /// `.crashfs/durable/<ino>`, open read-write.
    pub durable: File,
    /// `.crashfs/current/<ino>` once the file has been changed in this mount.
    pub current: Option<File>,
    /// Unsynced operations, oldest first.
    pub log: Vec<Op>,
    /// Open handles (a shared mapping holds one until it is unmapped).
    pub opens: u32,
}

impl FileNode {
    /// The file holding what a reader sees now.
    pub(crate) fn visible(&self) -> &File {
        self.current.as_ref().unwrap_or(&self.durable)
    }
}

/// Attributes of a directory (kept in memory; written to the backing tree at rebuild).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirAttr {
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
}

/// A directory.
#[derive(Debug)]
pub(crate) struct DirNode {
    /// Entries as the kernel sees them now.
    pub entries: BTreeMap<OsString, Ino>,
    /// Entries as of the last fsync of this directory (or the mount).
    pub durable: BTreeMap<OsString, Ino>,
    /// Current parent (the root is its own parent).
    pub parent: Ino,
    pub attr: DirAttr,
}

#[derive(Debug)]
pub(crate) enum Node {
    File(FileNode),
    Dir(DirNode),
}

/// Faults armed through the control interface; each fires once.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// (file, offset, len): every read overlapping the range fails with EIO (a latent sector
    /// error) until the faults are cleared. Not one-shot: the kernel retries a failed
    /// readahead with a read of its own, which would hide a single failure.
    pub read_eio: Vec<(Ino, u64, u64)>,
    /// (file, offset, len): the next sync with unsynced writes in the range fails with EIO and
    /// those writes never become durable.
    pub sync_eio: Vec<(Ino, u64, u64)>,
    /// file → distance: the next write to the file reaches the medium that far from where it
    /// was aimed.
    pub misdirect: HashMap<Ino, i64>,
}

/// Counters of what the file system saw (for reports and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub writes: u64,
    pub bytes_written: u64,
    pub file_syncs: u64,
    pub dir_syncs: u64,
    pub faults_fired: u64,
}

/// The whole state of one mount.
#[derive(Debug)]
pub struct Model {
    pub(crate) backing: PathBuf,
    pub(crate) meta: PathBuf,
    pub(crate) nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    pub(crate) faults: Faults,
    pub(crate) counters: Counters,
}

impl Model {
    /// Takes over `backing`: removes a `.crashfs` left by a file system that died without
    /// finishing (its unsynced content is lost, as in a crash), and links every file of the
    /// tree into `.crashfs/durable`.
    pub fn open(backing: &Path) -> io::Result<Model> {
        let backing = backing.canonicalize().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("backing directory {}: {e}", backing.display()),
            )
        })?;
        let meta = backing.join(META_DIR);
        if meta.exists() {
            std::fs::remove_dir_all(&meta)?;
        }
        std::fs::create_dir_all(meta.join("durable"))?;
        std::fs::create_dir_all(meta.join("current"))?;
        let root_md = std::fs::metadata(&backing)?;
        let mut model = Model {
            backing: backing.clone(),
            meta,
            nodes: HashMap::new(),
            next_ino: ROOT + 1,
            faults: Faults::default(),
            counters: Counters::default(),
        };
        model.nodes.insert(
            ROOT,
            Node::Dir(DirNode {
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
                parent: ROOT,
                attr: dir_attr(&root_md),
            }),
        );
        model.scan(&backing, ROOT)?;
        Ok(model)
    }

    /// Adds the backing tree under `path` as the entries of directory `ino`.
    fn scan(&mut self, path: &Path, ino: Ino) -> io::Result<()> {
        let mut names: Vec<_> = std::fs::read_dir(path)?.collect::<io::Result<Vec<_>>>()?;
        names.sort_by_key(|e| e.file_name());
        let mut entries = BTreeMap::new();
        for e in names {
            let name = e.file_name();
            if ino == ROOT && name == META_DIR {
                continue;
            }
            let md = std::fs::symlink_metadata(e.path())?;
            let child = self.alloc_ino();
            if md.is_dir() {
                self.nodes.insert(
                    child,
                    Node::Dir(DirNode {
                        entries: BTreeMap::new(),
                        durable: BTreeMap::new(),
                        parent: ino,
                        attr: dir_attr(&md),
                    }),
                );
                self.scan(&e.path(), child)?;
            } else if md.is_file() {
                let store = self.durable_path(child);
                std::fs::hard_link(e.path(), &store)?;
                let durable = OpenOptions::new().read(true).write(true).open(&store)?;
                self.nodes.insert(
                    child,
                    Node::File(FileNode {
                        durable,
                        current: None,
                        log: Vec::new(),
                        opens: 0,
                    }),
                );
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "{}: only regular files and directories are supported by the crash file system",
                        e.path().display()
                    ),
                ));
            }
            entries.insert(name, child);
        }
        let dir = self.dir_mut(ino)?;
        dir.durable = entries.clone();
        dir.entries = entries;
        Ok(())
    }

    fn alloc_ino(&mut self) -> Ino {
        let i = self.next_ino;
        self.next_ino += 1;
        i
    }

    pub(crate) fn durable_path(&self, ino: Ino) -> PathBuf {
        self.meta.join("durable").join(ino.to_string())
    }

    fn current_path(&self, ino: Ino) -> PathBuf {
        self.meta.join("current").join(ino.to_string())
    }

    pub(crate) fn node(&self, ino: Ino) -> io::Result<&Node> {
        self.nodes.get(&ino).ok_or_else(|| err(libc::ENOENT))
    }

    pub(crate) fn dir(&self, ino: Ino) -> io::Result<&DirNode> {
        match self.node(ino)? {
            Node::Dir(d) => Ok(d),
            Node::File(_) => Err(err(libc::ENOTDIR)),
        }
    }

    pub(crate) fn dir_mut(&mut self, ino: Ino) -> io::Result<&mut DirNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(err(libc::ENOTDIR)),
            None => Err(err(libc::ENOENT)),
        }
    }

    pub(crate) fn file(&self, ino: Ino) -> io::Result<&FileNode> {
        match self.node(ino)? {
            Node::File(f) => Ok(f),
            Node::Dir(_) => Err(err(libc::EISDIR)),
        }
    }

    pub(crate) fn file_mut(&mut self, ino: Ino) -> io::Result<&mut FileNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Ok(f),
            Some(Node::Dir(_)) => Err(err(libc::EISDIR)),
            None => Err(err(libc::ENOENT)),
        }
    }

    /// The child `name` of directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> io::Result<Ino> {
        self.dir(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or_else(|| err(libc::ENOENT))
    }

    /// Resolves a path relative to the mount's root (through current entries).
    pub fn resolve(&self, rel: &Path) -> io::Result<Ino> {
        let mut ino = ROOT;
        for c in rel.components() {
            match c {
                std::path::Component::Normal(n) => ino = self.lookup(ino, n)?,
                std::path::Component::CurDir | std::path::Component::RootDir => {}
                _ => return Err(err(libc::EINVAL)),
            }
        }
        Ok(ino)
    }

    /// How many current names a file has.
    pub(crate) fn link_count(&self, ino: Ino) -> u32 {
        self.nodes
            .values()
            .filter_map(|n| match n {
                Node::Dir(d) => Some(d.entries.values().filter(|&&i| i == ino).count() as u32),
                Node::File(_) => None,
            })
            .sum()
    }

    /// Creates an empty regular file `name` in `parent` (durable content: empty).
    pub fn create_file(
        &mut self,
        parent: Ino,
        name: &OsStr,
        perm: u32,
        uid: u32,
        gid: u32,
    ) -> io::Result<Ino> {
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(err(libc::EEXIST));
        }
        let ino = self.alloc_ino();
        let path = self.durable_path(ino);
        let durable = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(perm & 0o7777)
            .open(&path)?;
        durable.set_permissions(std::fs::Permissions::from_mode(perm & 0o7777))?;
        let _ = nix::unistd::fchown(&durable, Some(uid.into()), Some(gid.into()));
        self.nodes.insert(
            ino,
            Node::File(FileNode {
                durable,
                current: None,
                log: Vec::new(),
                opens: 0,
            }),
        );
        self.dir_mut(parent)?.entries.insert(name.to_owned(), ino);
        Ok(ino)
    }

    /// Creates directory `name` in `parent`.
    pub fn make_dir(
        &mut self,
        parent: Ino,
        name: &OsStr,
        perm: u32,
        uid: u32,
        gid: u32,
    ) -> io::Result<Ino> {
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(err(libc::EEXIST));
        }
        let ino = self.alloc_ino();
        self.nodes.insert(
            ino,
            Node::Dir(DirNode {
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
                parent,
                attr: DirAttr {
                    perm: perm & 0o7777,
                    uid,
                    gid,
                    mtime: SystemTime::now(),
                },
            }),
        );
        self.dir_mut(parent)?.entries.insert(name.to_owned(), ino);
        Ok(ino)
    }

    /// Removes the name of a file.
    pub fn unlink(&mut self, parent: Ino, name: &OsStr) -> io::Result<()> {
        let ino = self.lookup(parent, name)?;
        if let Node::Dir(_) = self.node(ino)? {
            return Err(err(libc::EISDIR));
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.collect(ino);
        Ok(())
    }

    /// Removes an empty directory.
    pub fn remove_dir(&mut self, parent: Ino, name: &OsStr) -> io::Result<()> {
        let ino = self.lookup(parent, name)?;
        if !self.dir(ino)?.entries.is_empty() {
            return Err(err(libc::ENOTEMPTY));
        }
        self.dir_mut(parent)?.entries.remove(name);
        Ok(())
    }

    /// Renames `parent/name` to `new_parent/new_name`, replacing a file (or an empty directory)
    /// there. `no_replace`: fail with EEXIST instead.
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        no_replace: bool,
    ) -> io::Result<()> {
        let ino = self.lookup(parent, name)?;
        self.dir(new_parent)?;
        let moving_dir = matches!(self.node(ino)?, Node::Dir(_));
        if moving_dir && self.is_under(new_parent, ino) {
            return Err(err(libc::EINVAL));
        }
        let replaced = self.dir(new_parent)?.entries.get(new_name).copied();
        if let Some(old) = replaced {
            if old == ino {
                return Ok(());
            }
            if no_replace {
                return Err(err(libc::EEXIST));
            }
            match (self.node(old)?, moving_dir) {
                (Node::Dir(d), true) if !d.entries.is_empty() => return Err(err(libc::ENOTEMPTY)),
                (Node::Dir(_), false) => return Err(err(libc::EISDIR)),
                (Node::File(_), true) => return Err(err(libc::ENOTDIR)),
                _ => {}
            }
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.dir_mut(new_parent)?
            .entries
            .insert(new_name.to_owned(), ino);
        if moving_dir {
            self.dir_mut(ino)?.parent = new_parent;
        }
        if let Some(old) = replaced {
            self.collect(old);
        }
        Ok(())
    }

    /// Whether `ino` is `ancestor` or below it (through current parents).
    fn is_under(&self, mut ino: Ino, ancestor: Ino) -> bool {
        loop {
            if ino == ancestor {
                return true;
            }
            match self.nodes.get(&ino) {
                Some(Node::Dir(d)) if d.parent != ino => ino = d.parent,
                _ => return false,
            }
        }
    }

    /// Adds a second name for a file.
    pub fn link(&mut self, ino: Ino, new_parent: Ino, new_name: &OsStr) -> io::Result<()> {
        self.file(ino)?;
        if self.dir(new_parent)?.entries.contains_key(new_name) {
            return Err(err(libc::EEXIST));
        }
        self.dir_mut(new_parent)?
            .entries
            .insert(new_name.to_owned(), ino);
        Ok(())
    }

    /// fsync of a directory: its current entries become durable.
    pub fn sync_dir(&mut self, ino: Ino) -> io::Result<()> {
        let dir = self.dir_mut(ino)?;
        let dropped: Vec<Ino> = dir
            .durable
            .values()
            .filter(|i| !dir.entries.values().any(|j| j == *i))
            .copied()
            .collect();
        dir.durable = dir.entries.clone();
        self.counters.dir_syncs += 1;
        for i in dropped {
            self.collect(i);
        }
        Ok(())
    }

    /// Forgets a file that no current or durable entry names and no handle holds.
    pub(crate) fn collect(&mut self, ino: Ino) {
        let Some(Node::File(f)) = self.nodes.get(&ino) else {
            return;
        };
        if f.opens > 0 {
            return;
        }
        let named = self.nodes.values().any(|n| match n {
            Node::Dir(d) => d
                .entries
                .values()
                .chain(d.durable.values())
                .any(|&i| i == ino),
            Node::File(_) => false,
        });
        if named {
            return;
        }
        self.nodes.remove(&ino);
        let _ = std::fs::remove_file(self.durable_path(ino));
        let _ = std::fs::remove_file(self.current_path(ino));
        self.faults.read_eio.retain(|f| f.0 != ino);
        self.faults.sync_eio.retain(|f| f.0 != ino);
        self.faults.misdirect.remove(&ino);
    }

    /// Counts an open handle of a file.
    pub fn open_file(&mut self, ino: Ino) -> io::Result<()> {
        self.file_mut(ino)?.opens += 1;
        Ok(())
    }

    /// Drops an open handle of a file.
    pub fn release_file(&mut self, ino: Ino) {
        if let Ok(f) = self.file_mut(ino) {
            f.opens = f.opens.saturating_sub(1);
        }
        self.collect(ino);
    }

    /// Makes sure the file has a current copy to change, and returns it.
    fn current_mut(&mut self, ino: Ino) -> io::Result<&File> {
        let path = self.current_path(ino);
        let f = self.file_mut(ino)?;
        if f.current.is_none() {
            let mut copy = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            let mut src = f.durable.try_clone()?;
            io::Seek::seek(&mut src, io::SeekFrom::Start(0))?;
            io::copy(&mut src, &mut copy)?;
            f.current = Some(copy);
        }
        Ok(f.current.as_ref().expect("just set"))
    }

    /// Reads up to `size` bytes at `offset` of what the file holds now.
    pub fn read(&mut self, ino: Ino, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        if self
            .faults
            .read_eio
            .iter()
            .any(|&(f, o, l)| f == ino && o < offset + size as u64 && offset < o + l.max(1))
        {
            self.counters.faults_fired += 1;
            return Err(err(libc::EIO));
        }
        let f = self.file(ino)?;
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match f.visible().read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// Writes `data` at `offset`: into the current copy, and into the log (at a wrong offset
    /// when a misdirected write is armed: the cache looks right, the medium is wrong).
    pub fn write(&mut self, ino: Ino, offset: u64, data: &[u8]) -> io::Result<()> {
        self.current_mut(ino)?.write_all_at(data, offset)?;
        let logged_at = match self.faults.misdirect.remove(&ino) {
            Some(delta) => {
                self.counters.faults_fired += 1;
                offset.saturating_add_signed(delta)
            }
            None => offset,
        };
        self.counters.writes += 1;
        self.counters.bytes_written += data.len() as u64;
        self.file_mut(ino)?.log.push(Op::write(logged_at, data));
        Ok(())
    }

    /// ftruncate.
    pub fn set_len(&mut self, ino: Ino, len: u64) -> io::Result<()> {
        self.current_mut(ino)?.set_len(len)?;
        self.file_mut(ino)?.log.push(Op::SetLen(len));
        Ok(())
    }

    /// fallocate (mode 0 or FALLOC_FL_KEEP_SIZE; others are refused with EOPNOTSUPP, which
    /// callers such as the WAL answer by writing zeros).
    pub fn allocate(&mut self, ino: Ino, offset: u64, len: u64, mode: i32) -> io::Result<()> {
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Err(err(libc::EOPNOTSUPP));
        }
        let size = self.file(ino)?.visible().metadata()?.len();
        if mode & libc::FALLOC_FL_KEEP_SIZE != 0 || offset + len <= size {
            return Ok(()); // no visible change; space reservation is not modelled
        }
        crate::oplog::allocate(self.current_mut(ino)?, offset, len)?;
        self.file_mut(ino)?.log.push(Op::Allocate { offset, len });
        Ok(())
    }

    /// fsync/fdatasync (and msync, which reaches a FUSE file system as writes then fsync):
    /// replays the log onto the durable content. An armed sync fault drops the writes in its
    /// range instead (they never become durable) and fails the sync with EIO.
    pub fn sync_file(&mut self, ino: Ino) -> io::Result<()> {
        self.counters.file_syncs += 1;
        let fault = {
            let log = &self.file(ino)?.log;
            self.faults
                .sync_eio
                .iter()
                .position(|&(f, o, l)| f == ino && log.iter().any(|op| op.overlaps(o, l)))
        };
        let fault = fault.map(|i| self.faults.sync_eio.remove(i));
        let f = self.file_mut(ino)?;
        let log = std::mem::take(&mut f.log);
        for op in &log {
            if let Some((_, o, l)) = fault {
                if op.overlaps(o, l) {
                    continue;
                }
            }
            op.apply(&f.durable)?;
        }
        if fault.is_some() {
            self.counters.faults_fired += 1;
            return Err(err(libc::EIO));
        }
        Ok(())
    }

    /// Zeroes the 512-byte sector holding `offset` in the durable content of a file (a medium
    /// error in synced data). Readers see it after the next crash or remount.
    pub fn zero_durable_sector(&mut self, ino: Ino, offset: u64) -> io::Result<()> {
        let f = self.file(ino)?;
        let start = offset / crate::oplog::SECTOR_BYTES * crate::oplog::SECTOR_BYTES;
        let size = f.durable.metadata()?.len();
        if start >= size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("offset {offset} is beyond the durable size {size}"),
            ));
        }
        let len = crate::oplog::SECTOR_BYTES.min(size - start);
        crate::oplog::write_zeros(&f.durable, start, len)
    }

    /// Path (relative to the mount root) of every node reachable through current entries,
    /// then through durable ones.
    pub(crate) fn paths(&self) -> HashMap<Ino, String> {
        let mut out = HashMap::new();
        for durable in [false, true] {
            let mut stack = vec![(ROOT, String::new())];
            let mut seen = HashSet::new();
            while let Some((ino, path)) = stack.pop() {
                if !seen.insert(ino) {
                    continue;
                }
                out.entry(ino).or_insert_with(|| path.clone());
                if let Some(Node::Dir(d)) = self.nodes.get(&ino) {
                    let entries = if durable { &d.durable } else { &d.entries };
                    for (name, &child) in entries {
                        let p = if path.is_empty() {
                            name.to_string_lossy().into_owned()
                        } else {
                            format!("{path}/{}", name.to_string_lossy())
                        };
                        stack.push((child, p));
                    }
                }
            }
        }
        out
    }

    /// Ends the mount: writes the durable namespace back as the backing tree (files are hard
    /// links to their durable content), then removes `.crashfs`. The caller has already
    /// decided what of the unsynced state became durable.
    pub(crate) fn rebuild_backing_tree(&mut self) -> io::Result<()> {
        let staging = self.meta.join("rebuild");
        std::fs::create_dir_all(&staging)?;
        let mut seen = HashSet::new();
        self.materialize(ROOT, &staging, &mut seen)?;
        for e in std::fs::read_dir(&self.backing)? {
            let e = e?;
            if e.file_name() == META_DIR {
                continue;
            }
            if e.file_type()?.is_dir() {
                std::fs::remove_dir_all(e.path())?;
            } else {
                std::fs::remove_file(e.path())?;
            }
        }
        for e in std::fs::read_dir(&staging)? {
            let e = e?;
            std::fs::rename(e.path(), self.backing.join(e.file_name()))?;
        }
        // Drop every handle before removing the store (the tree keeps the data).
        self.nodes.retain(|_, n| matches!(n, Node::Dir(_)));
        std::fs::remove_dir_all(&self.meta)
    }

    fn materialize(&self, ino: Ino, at: &Path, seen: &mut HashSet<Ino>) -> io::Result<()> {
        let dir = self.dir(ino)?;
        for (name, &child) in &dir.durable {
            if !seen.insert(child) && matches!(self.nodes.get(&child), Some(Node::Dir(_))) {
                continue; // a directory durably named twice (an unsynced rename): keep one
            }
            let path = at.join(name);
            match self.nodes.get(&child) {
                Some(Node::File(_)) => std::fs::hard_link(self.durable_path(child), &path)?,
                Some(Node::Dir(d)) => {
                    std::fs::DirBuilder::new().mode(d.attr.perm).create(&path)?;
                    let _ =
                        nix::unistd::chown(&path, Some(d.attr.uid.into()), Some(d.attr.gid.into()));
                    self.materialize(child, &path, seen)?;
                }
                None => {}
            }
        }
        Ok(())
    }
}

fn dir_attr(md: &std::fs::Metadata) -> DirAttr {
    DirAttr {
        perm: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    }
}

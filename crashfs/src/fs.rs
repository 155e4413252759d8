//! The FUSE side: each request becomes a call on the [`Model`] under its lock.
//!
//! Files are opened without `FOPEN_DIRECT_IO`, so shared mappings work and their dirty pages
//! reach [`Model::write`] as the kernel writes them back (on msync, fsync, or its own
//! schedule). The writeback cache (`FUSE_WRITEBACK_CACHE`) is not requested: `write(2)` is
//! write-through, so every `pwrite` reaches the model, in order, before it returns; only
//! mapped pages wait in the kernel (and are lost when a crash aborts the connection).

use crate::model::{Ino, Model, Node, ROOT};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may cache attributes and names. Every change passes through the
/// kernel, which updates its own copies, so a short cache is safe.
const TTL: Duration = Duration::from_secs(1);

/// The FUSE file system over a shared [`Model`].
pub(crate) struct CrashFs {
    pub model: Arc<Mutex<Model>>,
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH
    }
}

impl CrashFs {
    fn lock(&self) -> MutexGuard<'_, Model> {
        // A panic in one handler must not wedge the mount: the model stays usable.
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Attributes of `ino` as the kernel should see them now.
fn attr(m: &Model, ino: Ino) -> io::Result<FileAttr> {
    match m.node(ino)? {
        Node::Dir(d) => Ok(FileAttr {
            ino: INodeNo(ino),
            size: 4096,
            blocks: 8,
            atime: d.attr.mtime,
            mtime: d.attr.mtime,
            ctime: d.attr.mtime,
            crtime: d.attr.mtime,
            kind: FileType::Directory,
            perm: d.attr.perm as u16,
            nlink: 2,
            uid: d.attr.uid,
            gid: d.attr.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }),
        Node::File(f) => {
            let md = f.visible().metadata()?;
            let owner = f.durable.metadata()?;
            Ok(FileAttr {
                ino: INodeNo(ino),
                size: md.len(),
                blocks: md.blocks(),
                atime: time(md.atime(), md.atime_nsec()),
                mtime: time(md.mtime(), md.mtime_nsec()),
                ctime: time(md.ctime(), md.ctime_nsec()),
                crtime: time(md.ctime(), md.ctime_nsec()),
                kind: FileType::RegularFile,
                perm: (owner.mode() & 0o7777) as u16,
                nlink: m.link_count(ino),
                uid: owner.uid(),
                gid: owner.gid(),
                rdev: 0,
                blksize: 4096,
                flags: 0,
            })
        }
    }
}

impl Filesystem for CrashFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let m = self.lock();
        match m.lookup(parent.0, name).and_then(|ino| attr(&m, ino)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match attr(&self.lock(), ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
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
        let mut m = self.lock();
        let r = (|| {
            if let Some(len) = size {
                m.set_len(ino.0, len)?;
            }
            set_owner_and_mode(&mut m, ino.0, mode, uid, gid)?;
            attr(&m, ino.0)
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut m = self.lock();
        let r = m
            .make_dir(parent.0, name, mode & !umask, req.uid(), req.gid())
            .and_then(|ino| attr(&m, ino));
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.lock().unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.lock().remove_dir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        match self
            .lock()
            .rename(parent.0, name, newparent.0, newname, no_replace)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut m = self.lock();
        match m
            .link(ino.0, newparent.0, newname)
            .and_then(|()| attr(&m, ino.0))
        {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.lock().open_file(ino.0) {
            Ok(()) => reply.opened(FileHandle(ino.0), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut m = self.lock();
        let r = m
            .create_file(parent.0, name, mode & !umask, req.uid(), req.gid())
            .and_then(|ino| {
                m.open_file(ino)?;
                attr(&m, ino)
            });
        match r {
            Ok(a) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(a.ino.0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(e)),
        }
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
        match self.lock().read(ino.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(e)),
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
        match self.lock().write(ino.0, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
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
        self.lock().release_file(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.lock().sync_file(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.lock().dir(ino.0) {
            Ok(_) => reply.opened(FileHandle(ino.0), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
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
        let m = self.lock();
        let dir = match m.dir(ino.0) {
            Ok(d) => d,
            Err(e) => return reply.error(errno(e)),
        };
        let mut all = vec![
            (ino.0, FileType::Directory, OsStr::new(".").to_owned()),
            (dir.parent, FileType::Directory, OsStr::new("..").to_owned()),
        ];
        for (name, &child) in &dir.entries {
            let kind = match m.node(child) {
                Ok(Node::Dir(_)) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.lock().sync_dir(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let backing = self.lock().backing.clone();
        match nix::sys::statvfs::statvfs(&backing) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                255,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }

    /// No extended attributes are kept (the log uses none).
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.lock().allocate(ino.0, offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }
}

/// chmod/chown of a file (on its durable content: metadata changes are treated as durable at
/// once) or a directory.
fn set_owner_and_mode(
    m: &mut Model,
    ino: Ino,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
) -> io::Result<()> {
    if mode.is_none() && uid.is_none() && gid.is_none() {
        return Ok(());
    }
    if ino == ROOT || matches!(m.node(ino)?, Node::Dir(_)) {
        let d = m.dir_mut(ino)?;
        if let Some(p) = mode {
            d.attr.perm = p & 0o7777;
        }
        d.attr.uid = uid.unwrap_or(d.attr.uid);
        d.attr.gid = gid.unwrap_or(d.attr.gid);
        return Ok(());
    }
    let f = m.file(ino)?;
    if let Some(p) = mode {
        use std::os::unix::fs::PermissionsExt;
        f.durable
            .set_permissions(std::fs::Permissions::from_mode(p & 0o7777))?;
    }
    if uid.is_some() || gid.is_some() {
        nix::unistd::fchown(&f.durable, uid.map(Into::into), gid.map(Into::into))
            .map_err(io::Error::from)?;
    }
    Ok(())
}

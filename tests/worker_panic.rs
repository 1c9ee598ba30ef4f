//! A panic in a background thread (flush, compaction, checkpoint upload) reaches whoever waits
//! for that thread's work as a typed error naming the thread, never as a wait that does not
//! end; the store refuses writes until reopened, and nothing already durable is lost.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use eddy::checkpoint::{CheckpointOptions, CheckpointStorage, Checkpointer, LocalDirStorage, RestoreSource};
use eddy::codec::U64;
use eddy::io::{FaultFs, FileBytes, FileSystem, LockGuard, WritableFile};
use eddy::state::{KeyedBackend, OperatorStateBackend, ValueState, ValueStateDescriptor};
use eddy::store::{CompactionFilter, FilterDecision, StoreOptions};
use eddy::Error;

#[path = "support/hooked_storage.rs"]
mod hooked_storage;
use hooked_storage::{Hooked, StorageHooks};

/// A file system that panics on creating a segment file while `armed`.
#[derive(Debug, Clone)]
struct PanicOnSegment {
    inner: FaultFs,
    armed: Arc<AtomicBool>,
}

impl FileSystem for PanicOnSegment {
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        if self.armed.load(Ordering::SeqCst) && path.extension().is_some_and(|e| e == "seg") {
            panic!("injected panic creating {}", path.display());
        }
        self.inner.create(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        self.inner.create_new(path)
    }
    fn open(&self, path: &Path) -> io::Result<FileBytes> {
        self.inner.open(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_file(path)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.hard_link(from, to)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        self.inner.lock(path)
    }
}

/// A compaction filter that panics while `armed`.
struct PanicFilter(Arc<AtomicBool>);

impl CompactionFilter for PanicFilter {
    fn filter(&self, _: &[u8], _: &[u8], _: bool, _: &mut Vec<u8>) -> FilterDecision {
        if self.0.load(Ordering::SeqCst) {
            panic!("injected panic in a compaction filter");
        }
        FilterDecision::Keep
    }
}

/// Storage hooks that panic on an upload while `armed`.
#[derive(Debug)]
struct PanicOnPut(Arc<AtomicBool>);

impl StorageHooks for PanicOnPut {
    fn before_put(&self, name: &str) {
        if self.0.load(Ordering::SeqCst) {
            panic!("injected panic uploading {name}");
        }
    }
}

fn died(e: &Error, thread: &str) -> bool {
    matches!(e, Error::WorkerDied { worker, why } if *worker == thread && why.contains("injected panic"))
}

fn put_keys(b: &mut KeyedBackend<U64>, v: &ValueState<U64>, keys: std::ops::Range<u64>, add: u64) {
    for k in keys {
        b.set_current_key(&k).unwrap();
        v.update(b, &(k + add)).unwrap();
    }
}

/// Restores checkpoint `id` and checks that keys `0..n` hold `k + add`.
fn assert_restores(storage: &Arc<dyn CheckpointStorage>, fs: &FaultFs, id: u64, n: u64, add: u64) {
    let source = RestoreSource::Checkpoint { storage: storage.clone(), id };
    let opts = StoreOptions::new().file_system(Arc::new(fs.clone()));
    let (mut b, _) = KeyedBackend::builder(U64).store_options(opts).restore("/restored", &[source]).unwrap();
    let v = b.state(ValueStateDescriptor::new("v", U64)).unwrap();
    assert_eq!(b.keys(&v).unwrap().len() as u64, n);
    for k in 0..n {
        b.set_current_key(&k).unwrap();
        assert_eq!(v.get(&mut b).unwrap(), Some(k + add));
    }
}

#[test]
fn a_panic_in_the_flush_thread_fails_the_waiting_checkpoint_and_poisons_the_store() {
    let fs = FaultFs::new();
    let armed = Arc::new(AtomicBool::new(false));
    let pfs = PanicOnSegment { inner: fs.clone(), armed: armed.clone() };
    let opts = StoreOptions::new().file_system(Arc::new(pfs));
    let mut b = KeyedBackend::builder(U64).store_options(opts).open("/db").unwrap();
    let v = b.state(ValueStateDescriptor::new("v", U64)).unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), "/c").unwrap());
    let mut cp = Checkpointer::new(storage.clone(), CheckpointOptions::new()).unwrap();
    let op = OperatorStateBackend::new();
    put_keys(&mut b, &v, 0..100, 1);
    cp.checkpoint(1, &mut b, &op, false).unwrap();
    cp.wait(1).unwrap();

    armed.store(true, Ordering::SeqCst);
    put_keys(&mut b, &v, 0..100, 2);
    // The checkpoint waits for the flush of what was written since; it must end, with the
    // flush thread's death as its error.
    let err = match cp.checkpoint(2, &mut b, &op, false) {
        Ok(()) => cp.wait(2).unwrap_err(),
        Err(e) => e,
    };
    assert!(died(&err, "flush"), "{err:?}");
    // The store refuses writes until reopened.
    b.set_current_key(&7).unwrap();
    let err = v.update(&mut b, &0).unwrap_err();
    assert!(matches!(err, Error::WorkerDied { .. } | Error::Poisoned), "{err:?}");
    assert!(matches!(v.update(&mut b, &0), Err(Error::WorkerDied { .. } | Error::Poisoned)));
    drop(b);
    // What was durable is there.
    assert_restores(&storage, &fs, 1, 100, 1);
}

#[test]
fn a_panic_in_the_flush_thread_reaches_a_flush_and_the_store_reopens() {
    let fs = FaultFs::new();
    let armed = Arc::new(AtomicBool::new(false));
    let pfs = PanicOnSegment { inner: fs.clone(), armed: armed.clone() };
    let opts = StoreOptions::new().file_system(Arc::new(pfs.clone()));
    let mut s = opts.clone().open("/db").unwrap();
    for i in 0..100u32 {
        s.put(&i.to_be_bytes(), b"first").unwrap();
    }
    s.close().unwrap();
    let mut s = opts.clone().open("/db").unwrap();
    armed.store(true, Ordering::SeqCst);
    s.put(b"later", b"x").unwrap();
    let err = s.flush().unwrap_err();
    assert!(died(&err, "flush"), "{err:?}");
    assert!(matches!(s.put(b"kk", b"v"), Err(Error::WorkerDied { .. } | Error::Poisoned)));
    assert!(s.put(b"kk", b"v").is_err());
    drop(s);
    armed.store(false, Ordering::SeqCst);
    let mut s = opts.open("/db").unwrap();
    for i in 0..100u32 {
        assert_eq!(s.get(&i.to_be_bytes()).unwrap(), Some(&b"first"[..]));
    }
    s.put(b"kk", b"v").unwrap();
    s.flush().unwrap();
}

#[test]
fn a_panic_in_the_compaction_thread_reaches_a_compaction_and_the_store_reopens() {
    let fs = FaultFs::new();
    let armed = Arc::new(AtomicBool::new(false));
    let opts = StoreOptions::new().file_system(Arc::new(fs.clone()));
    let mut s = opts.clone().compaction_filter(Arc::new(PanicFilter(armed.clone()))).open("/db").unwrap();
    for round in 0..3u32 {
        for i in 0..100u32 {
            s.put(&i.to_be_bytes(), &round.to_be_bytes()).unwrap();
        }
        s.flush().unwrap();
    }
    s.close().unwrap();
    let mut s = opts.clone().compaction_filter(Arc::new(PanicFilter(armed.clone()))).open("/db").unwrap();
    armed.store(true, Ordering::SeqCst);
    let err = s.compact().unwrap_err();
    assert!(died(&err, "compaction"), "{err:?}");
    assert!(matches!(s.put(b"kk", b"v"), Err(Error::WorkerDied { .. } | Error::Poisoned)));
    drop(s);
    let mut s = opts.open("/db").unwrap();
    for i in 0..100u32 {
        assert_eq!(s.get(&i.to_be_bytes()).unwrap(), Some(&2u32.to_be_bytes()[..]));
    }
    s.compact().unwrap();
    s.verify().unwrap();
}

#[test]
fn a_panic_in_the_checkpoint_thread_fails_that_checkpoint_and_every_later_one() {
    let fs = FaultFs::new();
    let armed = Arc::new(AtomicBool::new(false));
    let opts = StoreOptions::new().file_system(Arc::new(fs.clone()));
    let mut b = KeyedBackend::builder(U64).store_options(opts).open("/db").unwrap();
    let v = b.state(ValueStateDescriptor::new("v", U64)).unwrap();
    let inner = LocalDirStorage::new(Arc::new(fs.clone()), "/c").unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(Hooked { inner, hooks: PanicOnPut(armed.clone()) });
    let mut cp = Checkpointer::new(storage.clone(), CheckpointOptions::new()).unwrap();
    let op = OperatorStateBackend::new();
    put_keys(&mut b, &v, 0..100, 1);
    cp.checkpoint(1, &mut b, &op, false).unwrap();
    cp.wait(1).unwrap();

    armed.store(true, Ordering::SeqCst);
    put_keys(&mut b, &v, 0..100, 2);
    cp.checkpoint(2, &mut b, &op, false).unwrap();
    let err = cp.wait(2).unwrap_err();
    assert!(died(&err, "checkpoint"), "{err:?}");
    // The worker's bookkeeping may be half done: it takes no more work.
    armed.store(false, Ordering::SeqCst);
    cp.checkpoint(3, &mut b, &op, false).unwrap();
    let err = cp.wait(3).unwrap_err();
    assert!(died(&err, "checkpoint"), "{err:?}");
    cp.savepoint(4, Arc::new(fs.clone()), "/sp", &mut b, &op).unwrap();
    let err = cp.wait(4).unwrap_err();
    assert!(died(&err, "checkpoint"), "{err:?}");
    assert!(!fs.exists(Path::new("/sp/SAVEPOINT.claim")), "the savepoint's claim is let go");
    assert_restores(&storage, &fs, 1, 100, 1);
    // The store itself is fine; a new checkpointer on the same storage goes on.
    drop(cp);
    let mut cp = Checkpointer::new(storage.clone(), CheckpointOptions::new()).unwrap();
    cp.checkpoint(5, &mut b, &op, false).unwrap();
    cp.wait(5).unwrap();
    drop(b);
    assert_restores_at(&storage, &fs, 5);
}

fn assert_restores_at(storage: &Arc<dyn CheckpointStorage>, fs: &FaultFs, id: u64) {
    let source = RestoreSource::Checkpoint { storage: storage.clone(), id };
    let opts = StoreOptions::new().file_system(Arc::new(fs.clone()));
    let (mut b, _) = KeyedBackend::builder(U64).store_options(opts).restore(format!("/r{id}"), &[source]).unwrap();
    let v = b.state(ValueStateDescriptor::new("v", U64)).unwrap();
    for k in 0..100u64 {
        b.set_current_key(&k).unwrap();
        assert_eq!(v.get(&mut b).unwrap(), Some(k + 2));
    }
}

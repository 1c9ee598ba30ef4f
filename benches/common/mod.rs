//! Workloads shared by the store benches, and the engines they run on.
//!
//! Every engine stores the same keys (`[key group u16 BE][key u64 BE]`, the key group being
//! `key % 128` as a stand-in for the key-group hash) and values, and does the same work per
//! operation, including encoding the key.
#![allow(dead_code)]

use std::path::Path;

use eddy::store::{Store, StoreOptions};

pub const KEY_GROUPS: u64 = 128;

#[inline]
pub fn encode_key(k: u64, out: &mut [u8; 10]) {
    out[..2].copy_from_slice(&((k % KEY_GROUPS) as u16).to_be_bytes());
    out[2..].copy_from_slice(&k.to_be_bytes());
}

/// The prefix of a scan: a key group and the key's top six bytes, which covers 65,536
/// consecutive keys of which every 128th is in that key group (512 keys).
pub fn scan_prefix(k: u64) -> [u8; 8] {
    let mut p = [0u8; 8];
    p[..2].copy_from_slice(&((k % KEY_GROUPS) as u16).to_be_bytes());
    p[2..].copy_from_slice(&k.to_be_bytes()[..6]);
    p
}

mod shuffle;
pub use shuffle::shuffled;

pub fn value_for(k: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (k as usize).wrapping_mul(131).wrapping_add(i) as u8).collect()
}

/// A key-value engine under test.
pub trait Engine {
    fn name(&self) -> &'static str;
    fn put(&mut self, key: &[u8], value: &[u8]);
    /// Whether the key was found (the value is read, not just located).
    fn get(&mut self, key: &[u8]) -> bool;
    /// Iterates the keys with this prefix; returns how many there were.
    fn scan(&mut self, prefix: &[u8]) -> usize;
    /// Lets background work finish.
    fn settle(&mut self) {}
}

pub struct Eddy {
    pub store: Store,
}

impl Eddy {
    pub fn open(dir: &Path, budget: usize) -> Self {
        Eddy { store: StoreOptions::new().memory_budget(budget).open(dir).expect("open eddy") }
    }
}

impl Engine for Eddy {
    fn name(&self) -> &'static str {
        "eddy"
    }
    #[inline]
    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.store.put(key, value).expect("put");
    }
    #[inline]
    fn get(&mut self, key: &[u8]) -> bool {
        match self.store.get(key).expect("get") {
            Some(v) => std::hint::black_box(v).len() < usize::MAX,
            None => false,
        }
    }
    fn scan(&mut self, prefix: &[u8]) -> usize {
        let mut it = self.store.scan_prefix(prefix).expect("scan");
        let mut n = 0;
        while let Some((k, v)) = it.next_entry().expect("scan") {
            std::hint::black_box((k, v));
            n += 1;
        }
        n
    }
    fn settle(&mut self) {
        self.store.wait_for_background().expect("background");
    }
}

#[cfg(feature = "peers")]
pub mod peers {
    //! RocksDB (configured like Flink's RocksDB state backend: managed memory shared by the
    //! block cache and the write buffers, index and filter blocks in the cache, 4 KiB blocks,
    //! Snappy, WAL disabled) and fjall (defaults with half the budget as block cache; its
    //! journal cannot be turned off, but it is not synced).
    use super::Engine;
    use std::path::Path;

    pub struct Rocks {
        db: rocksdb::DB,
        write: rocksdb::WriteOptions,
    }

    impl Rocks {
        pub fn open(dir: &Path, budget: usize) -> Self {
            let cache = rocksdb::Cache::new_lru_cache(budget);
            // Flink: write buffers may take half of the managed memory.
            let wbm =
                rocksdb::WriteBufferManager::new_write_buffer_manager_with_cache(budget / 2, false, cache.clone());
            let mut table = rocksdb::BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_block_size(4096);
            table.set_cache_index_and_filter_blocks(true);
            table.set_cache_index_and_filter_blocks_with_high_priority(true);
            table.set_pin_l0_filter_and_index_blocks_in_cache(true);
            let mut opts = rocksdb::Options::default();
            opts.create_if_missing(true);
            opts.set_use_fsync(false);
            opts.set_block_based_table_factory(&table);
            opts.set_write_buffer_manager(&wbm);
            opts.set_compression_type(rocksdb::DBCompressionType::Snappy);
            opts.set_max_background_jobs(2);
            let db = rocksdb::DB::open(&opts, dir).expect("open rocksdb");
            let mut write = rocksdb::WriteOptions::default();
            write.disable_wal(true);
            Rocks { db, write }
        }
    }

    impl Engine for Rocks {
        fn name(&self) -> &'static str {
            "rocksdb"
        }
        #[inline]
        fn put(&mut self, key: &[u8], value: &[u8]) {
            self.db.put_opt(key, value, &self.write).expect("put");
        }
        #[inline]
        fn get(&mut self, key: &[u8]) -> bool {
            match self.db.get_pinned(key).expect("get") {
                Some(v) => std::hint::black_box(&*v).len() < usize::MAX,
                None => false,
            }
        }
        fn scan(&mut self, prefix: &[u8]) -> usize {
            let mut ro = rocksdb::ReadOptions::default();
            if let Some(upper) = eddy::store::prefix_successor(prefix) {
                ro.set_iterate_upper_bound(upper);
            }
            let mut it = self.db.raw_iterator_opt(ro);
            it.seek(prefix);
            let mut n = 0;
            while it.valid() {
                std::hint::black_box((it.key(), it.value()));
                n += 1;
                it.next();
            }
            n
        }
    }

    pub struct Fjall {
        _db: fjall::Database,
        ks: fjall::Keyspace,
    }

    impl Fjall {
        pub fn open(dir: &Path, budget: usize) -> Self {
            let db = fjall::Database::builder(dir)
                .cache_size(budget as u64 / 2)
                .manual_journal_persist(true)
                .open()
                .expect("open fjall");
            let ks = db.keyspace("state", fjall::KeyspaceCreateOptions::default).expect("keyspace");
            Fjall { _db: db, ks }
        }
    }

    impl Engine for Fjall {
        fn name(&self) -> &'static str {
            "fjall"
        }
        #[inline]
        fn put(&mut self, key: &[u8], value: &[u8]) {
            self.ks.insert(key, value).expect("put");
        }
        #[inline]
        fn get(&mut self, key: &[u8]) -> bool {
            match self.ks.get(key).expect("get") {
                Some(v) => std::hint::black_box(&*v).len() < usize::MAX,
                None => false,
            }
        }
        fn scan(&mut self, prefix: &[u8]) -> usize {
            let mut n = 0;
            for kv in self.ks.prefix(prefix) {
                std::hint::black_box(kv.into_inner().expect("scan"));
                n += 1;
            }
            n
        }
    }
}

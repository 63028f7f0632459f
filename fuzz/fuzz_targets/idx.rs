//! Fuzzes the IDX/gzip reader: any byte string must parse or return a DataError, never panic,
//! hang or allocate without bound. Corpus: fuzz/corpus/idx (kept as regression inputs that
//! tests/data.rs replays on every `cargo test`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(array) = wgtrain::data::idx::parse_idx(data, std::path::Path::new("fuzz.idx")) {
        // A successful parse must be self-consistent.
        assert_eq!(array.dims.iter().product::<usize>(), array.data.len());
    }
});

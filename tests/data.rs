//! IDX parsing (good and broken files), checksums, and the paper's preprocessing.

use std::path::Path;

use wgtrain::data::idx::{encode_idx, parse_idx};
use wgtrain::data::{self, DataError, Dataset, epoch_order, one_hot, split_indices, zscore_images};

use crate::common::{fashion_mnist, gz, synthetic_images, write_dataset, write_idx};

fn parse(bytes: &[u8]) -> Result<wgtrain::data::idx::IdxArray, DataError> {
    parse_idx(bytes, Path::new("test.idx"))
}

#[test]
fn parses_plain_and_gzipped_idx_alike() {
    let data: Vec<u8> = (0..24).collect();
    let plain = encode_idx(&[2, 3, 4], &data);
    let a = parse(&plain).unwrap();
    let b = parse(&gz(&plain)).unwrap();
    assert_eq!(a.dims, vec![2, 3, 4]);
    assert_eq!(a.data, data);
    assert_eq!(a, b);
}

#[test]
fn rejects_idx_with_bad_magic() {
    let mut bytes = encode_idx(&[3], &[1, 2, 3]);
    bytes[0] = 7;
    assert!(matches!(parse(&bytes), Err(DataError::BadMagic { .. })));
}

#[test]
fn rejects_idx_with_non_byte_items() {
    let mut bytes = encode_idx(&[3], &[1, 2, 3]);
    bytes[2] = 0x0D; // float
    let err = parse(&bytes).unwrap_err();
    assert!(
        matches!(err, DataError::UnsupportedType { code: 0x0D, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("test.idx"));
}

#[test]
fn rejects_idx_whose_payload_is_truncated_or_too_long() {
    let bytes = encode_idx(&[2, 2, 2], &[0; 8]);
    let short = parse(&bytes[..bytes.len() - 1]).unwrap_err();
    assert!(
        matches!(
            short,
            DataError::Length {
                expected: 8,
                found: 7,
                ..
            }
        ),
        "{short}"
    );
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(
        parse(&long),
        Err(DataError::Length {
            expected: 8,
            found: 9,
            ..
        })
    ));
    assert!(matches!(
        parse(&bytes[..6]),
        Err(DataError::Length { what: "header", .. })
    ));
}

#[test]
fn rejects_truncated_gzip_and_empty_files() {
    let zipped = gz(&encode_idx(&[100], &[7; 100]));
    let err = parse(&zipped[..zipped.len() / 2]).unwrap_err();
    assert!(matches!(err, DataError::Gzip { .. }), "{err}");
    assert!(matches!(parse(&[]), Err(DataError::Empty { .. })));
}

#[test]
fn rejects_header_whose_dimensions_overflow() {
    let bytes = encode_idx(&[u32::MAX as usize, u32::MAX as usize, 16], &[]);
    assert!(matches!(parse(&bytes), Err(DataError::Header { .. })));
}

#[test]
fn missing_file_names_the_expected_files() {
    let dir = tempfile::tempdir().unwrap();
    let err = Dataset::load(dir.path(), 0.2, 1).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }));
    assert!(err.to_string().contains("train-images-idx3-ubyte"), "{err}");
}

#[test]
fn rejects_image_and_label_counts_that_differ() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 20, 10, 4, 3, false);
    write_idx(
        dir.path(),
        "train-labels-idx1-ubyte",
        &[19],
        &[0; 19],
        false,
    );
    let err = Dataset::load(dir.path(), 0.2, 1).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::CountMismatch {
                image_count: 20,
                label_count: 19,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn rejects_test_label_outside_the_training_classes() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 30, 5, 4, 3, true);
    std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    write_idx(
        dir.path(),
        "t10k-labels-idx1-ubyte",
        &[5],
        &[0, 1, 2, 9, 1],
        false,
    );
    let err = Dataset::load(dir.path(), 0.2, 1).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                index: 3,
                label: 9,
                classes: 3,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn rejects_images_of_the_wrong_rank() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 20, 10, 4, 3, false);
    write_idx(
        dir.path(),
        "train-images-idx3-ubyte",
        &[20, 16],
        &[0; 320],
        false,
    );
    assert!(matches!(
        Dataset::load(dir.path(), 0.2, 1),
        Err(DataError::BadRank {
            expected: 3,
            found: 2,
            ..
        })
    ));
}

#[test]
fn checksum_list_catches_a_corrupt_file() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 20, 10, 4, 3, false);
    let path = dir.path().join("train-labels-idx1-ubyte");
    let good = data::checksum::sha256_hex(&std::fs::read(&path).unwrap());
    std::fs::write(
        dir.path().join("SHA256SUMS"),
        format!("{good}  train-labels-idx1-ubyte\n"),
    )
    .unwrap();
    Dataset::load(dir.path(), 0.2, 1).expect("matching checksum loads");
    // Flip one label: still a valid IDX file, so only the checksum can tell.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = Dataset::load(dir.path(), 0.2, 1).unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("train-labels-idx1-ubyte"));
}

#[test]
fn vendored_fashion_mnist_matches_its_checksums_and_shape() {
    let dir = fashion_mnist();
    let list = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    assert_eq!(list.lines().count(), 4);
    for line in list.lines() {
        let (digest, name) = line.split_once("  ").unwrap();
        assert_eq!(
            data::checksum::sha256_hex(&std::fs::read(dir.join(name)).unwrap()),
            digest,
            "{name}"
        );
    }
    let raw = data::read_pair(&dir, data::TEST_IMAGES, data::TEST_LABELS).unwrap();
    assert_eq!((raw.count, raw.rows, raw.cols), (10_000, 28, 28));
}

#[test]
fn zscore_gives_each_image_zero_mean_and_unit_std() {
    let (pixels, _) = synthetic_images(5, 6, 3, 3);
    let z = zscore_images(&pixels, 36);
    for image in z.chunks(36) {
        let mean: f64 = image.iter().map(|&v| v as f64).sum::<f64>() / 36.0;
        let var: f64 = image
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / 36.0;
        assert!(mean.abs() < 1e-6, "mean {mean}");
        assert!((var.sqrt() - 1.0).abs() < 1e-5, "std {}", var.sqrt());
    }
}

#[test]
fn zscore_is_the_plain_f64_formula_bit_for_bit_on_every_fashion_mnist_image() {
    // The loader sums pixels in integers and z-scores images in parallel, straight into each
    // split; the numbers must stay those of the obvious sequential f64 loop, or every trained
    // result would move.
    fn reference(image: &[u8]) -> Vec<f32> {
        let n = image.len() as f64;
        let mean = image.iter().map(|&p| p as f64).sum::<f64>() / n;
        let var = image
            .iter()
            .map(|&p| (p as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let scale = if var.sqrt() < 1e-8 {
            1.0
        } else {
            1.0 / var.sqrt()
        };
        image
            .iter()
            .map(|&p| ((p as f64 - mean) * scale) as f32)
            .collect()
    }
    let dir = fashion_mnist();
    let raw = data::read_pair(&dir, data::TRAIN_IMAGES, data::TRAIN_LABELS).unwrap();
    let features = raw.features();
    let dataset = Dataset::from_raw(
        &raw,
        &data::read_pair(&dir, data::TEST_IMAGES, data::TEST_LABELS).unwrap(),
        0.2,
        3,
    )
    .unwrap();
    for split in [&dataset.train, &dataset.val] {
        for (j, &row) in split.rows.iter().enumerate() {
            let row = row as usize;
            let expected = reference(&raw.pixels[row * features..(row + 1) * features]);
            let got = &split.images()[j * features..(j + 1) * features];
            assert!(
                expected
                    .iter()
                    .zip(got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "training image {row}"
            );
        }
    }
    // Bright, long images: the integer pixel sum is still the f64 sum.
    let bright: Vec<u8> = (0..200_000u32).map(|i| 200 + (i % 56) as u8).collect();
    let z = zscore_images(&bright, bright.len());
    assert_eq!(
        z.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        reference(&bright)
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    );
}

#[test]
fn zscore_of_a_constant_image_is_zero_not_nan() {
    let z = zscore_images(&[7; 16], 16);
    assert!(z.iter().all(|&v| v == 0.0), "{z:?}");
}

#[test]
fn split_is_seeded_disjoint_and_complete() {
    let (train, val) = split_indices(1000, 0.2, 5).unwrap();
    assert_eq!((train.len(), val.len()), (800, 200));
    let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
    assert_eq!(
        split_indices(1000, 0.2, 5).unwrap(),
        (train.clone(), val.clone())
    );
    assert_ne!(split_indices(1000, 0.2, 6).unwrap().1, val);
    assert!(
        split_indices(10, 0.01, 1).is_none(),
        "an empty validation set is refused"
    );
    assert!(split_indices(10, 1.0, 1).is_none());
}

#[test]
fn one_hot_sets_one_column_per_row() {
    let t = one_hot(&[2, 0, 1], 3);
    assert_eq!(t, vec![0., 0., 1., 1., 0., 0., 0., 1., 0.]);
}

#[test]
fn epoch_order_is_a_seeded_permutation_that_changes_every_epoch() {
    let a = epoch_order(1, 1, 500);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..500).collect::<Vec<u32>>());
    assert_eq!(a, epoch_order(1, 1, 500));
    assert_ne!(a, epoch_order(1, 2, 500));
    assert_ne!(a, epoch_order(2, 1, 500));
}

#[test]
fn dataset_takes_shape_and_classes_from_the_files() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 50, 20, 5, 4, true);
    let d = Dataset::load(dir.path(), 0.2, 1).unwrap();
    assert_eq!((d.features, d.classes), (25, 4));
    assert_eq!((d.train.len, d.val.len, d.test.len), (40, 10, 20));
    assert_eq!(d.train.images().len(), 40 * 25);
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn consistent(result: Result<wgtrain::data::idx::IdxArray, DataError>) {
        if let Ok(a) = result {
            assert_eq!(a.dims.iter().product::<usize>(), a.data.len());
        }
    }

    proptest! {
        #[test]
        fn any_byte_string_parses_or_errors_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            consistent(parse(&bytes));
            consistent(parse(&gz(&bytes)));
        }

        #[test]
        fn any_header_with_any_payload_length_parses_exactly_when_they_agree(
            dims in proptest::collection::vec(0usize..40, 1..4),
            slack in -3i64..3,
            item_type in prop_oneof![Just(8u8), any::<u8>()],
        ) {
            let expected: usize = dims.iter().product();
            let len = (expected as i64 + slack).max(0) as usize;
            let mut bytes = encode_idx(&dims, &vec![1u8; len]);
            bytes[2] = item_type;
            let result = parse(&bytes);
            prop_assert_eq!(result.is_ok(), item_type == 8 && len == expected);
            consistent(result);
        }
    }
}

#[test]
fn the_fuzzers_corpus_still_parses_or_errors_cleanly() {
    // Every input the fuzzer found interesting stays a regression test.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/idx");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        if let Ok(a) = parse(&bytes) {
            assert_eq!(a.dims.iter().product::<usize>(), a.data.len());
        }
        n += 1;
    }
    assert!(n >= 10, "the corpus holds {n} inputs");
}

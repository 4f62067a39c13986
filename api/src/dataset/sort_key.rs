//! Sort keys as bytes whose order is the key's order (the memcomparable
//! format), so a range's rows can be sorted by DataFusion's `SortExec` on
//! one binary column: that sort holds Arrow batches rather than a Rust value
//! per row, and spills to disk under a memory limit.
//!
//! The format follows serde's structure: fields and elements in order,
//! shorter sequences first, `None` before `Some`, enum variants by index.
//! That is the order `#[derive(Ord)]` gives, but a hand-written `Ord` (or
//! `std::cmp::Reverse`) may differ, so [`bytes_keep_order`] checks the
//! sorted sample before a sort relies on the bytes; otherwise the sort
//! keeps decoded rows in memory and orders them by `Ord` itself.

use arrow::array::{ArrayRef, BinaryBuilder};
use serde::Serialize;
use tone_engine::EngineError;

/// The column that carries a row's key bytes.
pub(crate) const KEY_BYTES_COLUMN: &str = "__key";

/// The memcomparable bytes of `key`, written into `buffer` (cleared first).
pub(crate) fn encode<K: Serialize>(key: &K, buffer: &mut Vec<u8>) -> Result<(), EngineError> {
    buffer.clear();
    let mut serializer = memcomparable::Serializer::new(&mut *buffer);
    key.serialize(&mut serializer)
        .map_err(|error| EngineError::Execution {
            message: format!(
                "cannot encode a sort key of type {} as ordered bytes: {error}",
                std::any::type_name::<K>()
            ),
        })
}

/// The key-bytes column of `keys`.
pub(crate) fn column<K: Serialize>(keys: impl Iterator<Item = K>) -> Result<ArrayRef, EngineError> {
    let mut builder = BinaryBuilder::new();
    let mut buffer = Vec::new();
    for key in keys {
        encode(&key, &mut buffer)?;
        builder.append_value(&buffer);
    }
    Ok(std::sync::Arc::new(builder.finish()))
}

/// Whether comparing the bytes of `sorted` (keys sorted by `Ord`) gives
/// the same answer as `Ord` for every neighbouring pair, equal keys
/// included. False when a key cannot be encoded (a map, say) or panics the
/// encoder (an enum of more than 256 variants).
pub(crate) fn bytes_keep_order<K: Serialize + Ord>(sorted: &[K]) -> bool {
    let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sorted
            .iter()
            .map(|key| {
                let mut buffer = Vec::new();
                encode(key, &mut buffer).ok().map(|()| buffer)
            })
            .collect::<Option<Vec<Vec<u8>>>>()
    }));
    let Ok(Some(encoded)) = encoded else {
        return false;
    };
    sorted
        .windows(2)
        .zip(encoded.windows(2))
        .all(|(keys, bytes)| keys[0].cmp(&keys[1]) == bytes[0].cmp(&bytes[1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    fn bytes<K: Serialize>(key: &K) -> Vec<u8> {
        let mut buffer = Vec::new();
        encode(key, &mut buffer).expect("encodes");
        buffer
    }

    /// Every pair of `keys` compares the same by bytes as by `Ord`.
    fn assert_same_order<K: Serialize + Ord + std::fmt::Debug>(keys: &[K]) {
        for left in keys {
            for right in keys {
                assert_eq!(
                    bytes(left).cmp(&bytes(right)),
                    left.cmp(right),
                    "{left:?} against {right:?}"
                );
            }
        }
    }

    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
    enum Shape {
        Dot,
        Line(u32),
        Box { width: i16, name: String },
    }

    #[test]
    fn bytes_order_as_derived_ord_does() {
        assert_same_order(&[i64::MIN, -70_000, -1, 0, 1, 255, 256, i64::MAX]);
        assert_same_order(&[0u8, 1, 127, 128, 255]);
        assert_same_order(&["", "a", "a\0", "ab", "abcdefgh", "abcdefghi", "b", "é"]);
        let byte_strings: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0, 0], vec![1], vec![255; 9]];
        assert_same_order(&byte_strings);
        assert_same_order(&[None, Some(-1i32), Some(0), Some(3)]);
        assert_same_order(&[(1u32, "b".to_string()), (1, "c".into()), (2, "a".into())]);
        assert_same_order(&[false, true]);
        assert_same_order(&['a', 'z', 'é', '😀']);
        assert_same_order(&[
            Shape::Dot,
            Shape::Line(0),
            Shape::Line(7),
            Shape::Box {
                width: -3,
                name: "z".into(),
            },
            Shape::Box {
                width: 2,
                name: "a".into(),
            },
            Shape::Box {
                width: 2,
                name: "b".into(),
            },
        ]);
    }

    #[test]
    fn a_reversed_order_is_caught_by_the_sample_check() {
        let mut keys: Vec<std::cmp::Reverse<u32>> = (0..10).map(std::cmp::Reverse).collect();
        keys.sort();
        assert!(!bytes_keep_order(&keys));
        let mut plain: Vec<u32> = (0..10).chain(0..10).collect();
        plain.sort();
        assert!(bytes_keep_order(&plain));
    }

    #[test]
    fn keys_the_format_cannot_encode_fall_back() {
        let map: std::collections::BTreeMap<u8, u8> = [(1, 2)].into();
        assert!(!bytes_keep_order(&[map]));
        let mut buffer = Vec::new();
        let error = encode(&std::collections::BTreeMap::from([(1u8, 2u8)]), &mut buffer)
            .expect_err("maps are not ordered bytes");
        assert!(error.to_string().contains("BTreeMap"), "{error}");
    }
}

//! Dtype names: the one table that maps libtorch kinds to the names pzt prints and reads
//! (`float32`, `bfloat16`, ...), with the short aliases some commands accept (`bf16`, `fp32`).

use tch::Kind;

/// (kind, name, short name for tree displays, aliases).
type Row = (Kind, &'static str, &'static str, &'static [&'static str]);

const TABLE: [Row; 10] = [
    (Kind::Float, "float32", "f32", &["fp32", "f32"]),
    (Kind::Double, "float64", "f64", &["fp64", "f64"]),
    (Kind::BFloat16, "bfloat16", "bf16", &["bf16"]),
    (Kind::Half, "float16", "f16", &["fp16", "f16"]),
    (Kind::Int64, "int64", "i64", &[]),
    (Kind::Int, "int32", "i32", &[]),
    (Kind::Int16, "int16", "i16", &[]),
    (Kind::Int8, "int8", "i8", &[]),
    (Kind::Uint8, "uint8", "u8", &[]),
    (Kind::Bool, "bool", "bool", &[]),
];

/// The name of a kind (`other` for kinds pzt does not name).
pub fn name(kind: Kind) -> &'static str {
    TABLE
        .iter()
        .find(|r| r.0 == kind)
        .map(|r| r.1)
        .unwrap_or("other")
}

/// The short name shown in tree displays (`f32`, `bf16`; `?` for kinds pzt does not name).
pub fn short_name(kind: Kind) -> &'static str {
    TABLE
        .iter()
        .find(|r| r.0 == kind)
        .map(|r| r.2)
        .unwrap_or("?")
}

/// The kind of an exact name (`float32`, not `fp32`).
pub fn from_name(name: &str) -> Option<Kind> {
    TABLE.iter().find(|r| r.1 == name).map(|r| r.0)
}

/// The kind of a name or one of its aliases (`bf16`, `fp32`, ...).
pub fn from_name_or_alias(name: &str) -> Option<Kind> {
    TABLE
        .iter()
        .find(|r| r.1 == name || r.3.contains(&name))
        .map(|r| r.0)
}

/// Whether the kind is a floating-point type pzt computes in (float32, float64, bfloat16,
/// float16).
pub fn is_float(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Float | Kind::Double | Kind::BFloat16 | Kind::Half
    )
}

/// Bytes per element.
pub fn elem_size(kind: Kind) -> i64 {
    match kind {
        Kind::Double | Kind::Int64 => 8,
        Kind::BFloat16 | Kind::Half | Kind::Int16 => 2,
        Kind::Bool | Kind::Uint8 | Kind::Int8 => 1,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (k, n, _, aliases) in TABLE {
            assert_eq!(name(k), n);
            assert_eq!(from_name(n), Some(k));
            for a in aliases {
                assert_eq!(from_name(a), None, "{a} is an alias, not a name");
                assert_eq!(from_name_or_alias(a), Some(k));
            }
        }
        assert_eq!(name(Kind::ComplexFloat), "other");
        assert_eq!(short_name(Kind::BFloat16), "bf16");
        assert_eq!(from_name_or_alias("float8"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(elem_size(Kind::BFloat16), 2);
        assert_eq!(elem_size(Kind::Float), 4);
        assert_eq!(elem_size(Kind::Int64), 8);
        assert!(is_float(Kind::Half) && !is_float(Kind::Int64));
    }
}

//! Default values for serde fields of configs that also have required fields (a struct whose
//! fields all have defaults uses `#[serde(default)]` and `Default` instead).

/// `true`.
pub fn yes() -> bool {
    true
}

/// The unsigned integer `N`.
pub fn uint<const N: u64>() -> u64 {
    N
}

/// The count `N`.
pub fn count<const N: usize>() -> usize {
    N
}

//! Hugging Face tensor names: each parameter the decoder builder made has a role
//! ([`crate::models::decoder::Role`]); the family's converter ([`super::families`]) names the
//! tensor that holds it and how it is laid out. The map is derived from the built tree, so it
//! cannot drift from the builder.

use super::transform::Transform;
use super::Arch;
use crate::base::Result;
use crate::models::decoder::Role;
use crate::tree::Builder;

/// `(pzt label, HF tensor name, transform)` for every parameter of `arch`'s model.
pub fn weight_map(arch: &Arch) -> Result<Vec<(String, String, Transform)>> {
    let built = arch.build(&Builder::slots())?;
    Ok(names(arch, &built.parts))
}

/// The HF names of the parameters with these roles.
pub fn names(arch: &Arch, parts: &[(String, Role)]) -> Vec<(String, String, Transform)> {
    parts
        .iter()
        .map(|(label, role)| {
            let (name, tr) = name_of(arch, *role);
            (label.clone(), name, tr)
        })
        .collect()
}

fn name_of(a: &Arch, role: Role) -> (String, Transform) {
    (super::families::of(a.family).name_of)(a, role)
}
